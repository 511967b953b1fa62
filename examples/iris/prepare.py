"""Split the iris data set (raw/iris.csv, as scikit-learn bundles it) into train and test CSVs."""
import argparse
import csv
import os

from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--source", default="raw/iris.csv")
parser.add_argument("--out", required=True)
parser.add_argument("--test-size", type=float, default=0.3)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()

with open(args.source, newline="") as f:
    rows = list(csv.reader(f))
header = rows[0]
data = [[float(v) for v in row[:-1]] for row in rows[1:]]
target = [int(row[-1]) for row in rows[1:]]
x_train, x_test, y_train, y_test = train_test_split(
    data, target, test_size=args.test_size, random_state=args.seed, stratify=target)

os.makedirs(args.out, exist_ok=True)
for name, xs, ys in (("train", x_train, y_train), ("test", x_test, y_test)):
    path = os.path.join(args.out, f"{name}.csv")
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for x, y in zip(xs, ys):
            writer.writerow([*x, int(y)])
    os.replace(path + ".tmp", path)
    print(f"wrote {len(ys)} rows to {path}")
