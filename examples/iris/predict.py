"""Batch-predict the test CSV's rows with the trained model."""
import argparse
import csv
import os
import pickle

from common import read_csv

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--out", required=True)
args = parser.parse_args()

# KILN_MODEL names the model of the train step this predict step consumes.
model_path = os.environ.get("KILN_MODEL", args.model)
with open(model_path, "rb") as f:
    model = pickle.load(f)
features, _ = read_csv(args.data)
with open(args.out + ".tmp", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["row", "prediction"])
    for i, label in enumerate(model.predict(features)):
        writer.writerow([i, int(label)])
os.replace(args.out + ".tmp", args.out)
print(f"wrote {len(features)} predictions to {args.out}")
