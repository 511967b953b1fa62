"""Reading the CSVs prepare.py writes."""
import csv


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    features = [[float(v) for v in row[:-1]] for row in rows[1:]]
    labels = [int(row[-1]) for row in rows[1:]]
    return features, labels
