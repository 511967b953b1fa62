#pragma once

namespace kiln::cli {

/// Parses the command line, runs one command, and maps every failure to a
/// documented exit status.
int main(int argc, char** argv);

} // namespace kiln::cli
