#pragma once

#include <cstddef>

namespace kiln::cli {

/// Workflow files from this size up are loaded on a heap backed by huge pages.
inline constexpr std::size_t k_huge_heap_from = std::size_t{256} << 10;

/// Backs the rest of the process's heap with transparent huge pages, where
/// the kernel grants them on request (THP "madvise", Debian's default).
/// Loading and running a workflow of 10,000 steps builds tens of megabytes
/// of small objects; faulting them in 4 KiB at a time cost a rerun of that
/// many cached steps some 15,000 page faults, over a fifth of its time on a
/// VM. Small commands do not call it: the first touch of a huge page costs
/// more than they allocate. Without THP the advice fails and nothing
/// changes. Idempotent.
void use_huge_pages();

/// Ends the process with `status` without freeing the heap, once what must
/// be closed is closed: stdio is flushed, and nothing else is done. A run
/// of 10,000 steps holds tens of megabytes of small objects (the plan, the
/// hash memo, the decisions); freeing them one by one cost a no-op rerun
/// some 30 ms on its way out, for memory the OS takes back at once (mold
/// exits the same way). In a sanitizer build it returns, so that the leak
/// check sees everything freed as usual.
void exit_leaving_heap(int status);

} // namespace kiln::cli
