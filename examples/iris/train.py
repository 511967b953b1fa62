"""Fit a logistic regression on the training CSV and pickle it."""
import argparse
import os
import pickle

from sklearn.linear_model import LogisticRegression

from common import read_csv

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--C", type=float, default=1.0)
parser.add_argument("--max-iter", type=int, default=200)
parser.add_argument("--out", required=True)
args = parser.parse_args()

features, labels = read_csv(args.data)
model = LogisticRegression(C=args.C, max_iter=args.max_iter)
model.fit(features, labels)
with open(args.out + ".tmp", "wb") as f:
    pickle.dump(model, f)
os.replace(args.out + ".tmp", args.out)
train_accuracy = model.score(features, labels)
print(f"trained on {len(labels)} rows (C={args.C}, max_iter={args.max_iter}); "
      f"training accuracy {train_accuracy:.4f}")
# Recorded by kiln while the step runs (see kiln-tracking(7)): any program
# can print these lines.
print(f"::kiln::param solver={model.solver} rows={len(labels)}")
print(f"::kiln::metric train_accuracy={train_accuracy} iterations={int(model.n_iter_.max())}")
print("::kiln::tag model_family=logistic_regression", flush=True)
