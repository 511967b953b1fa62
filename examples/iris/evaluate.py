"""Score the model on the test CSV; write accuracy and macro F1 as JSON."""
import argparse
import json
import os
import pickle

from sklearn.metrics import accuracy_score, f1_score

from common import read_csv

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--metrics", required=True)
args = parser.parse_args()

with open(args.model, "rb") as f:
    model = pickle.load(f)
features, labels = read_csv(args.data)
predicted = model.predict(features)
metrics = {
    "accuracy": accuracy_score(labels, predicted),
    "f1": f1_score(labels, predicted, average="macro"),
    "test_rows": len(labels),
}
with open(args.metrics + ".tmp", "w") as f:
    json.dump(metrics, f, indent=2)
os.replace(args.metrics + ".tmp", args.metrics)
print(f"accuracy {metrics['accuracy']:.4f}, f1 {metrics['f1']:.4f} on {len(labels)} rows")
