"""Rule loglik_signals: one captioner x the splits gray-box attacks read -> signals/loglik/<id>.parquet.

One job per captioner (a ``split`` column; readers select one with ``m4i.io.read_split``): the
model, features and imports load once, not once per split. Each split is scored on its own."""
from m4i.data.manifest import records_of_splits
from m4i.io import M4IError, load_torch, write_table
from m4i.models.features import load_features
from m4i.progress import Progress
from m4i.signals.loglik import reference_loglik
from m4i.workflow import run


def main(smk):
    import pandas as pd

    splits = list(smk.params.splits)
    if not splits:
        raise M4IError(f"loglik_signals {smk.wildcards.model}: no split to score")
    checkpoint, features = load_torch(smk.input.model), load_features(smk.input.features)
    progress = Progress(f"loglik signals {smk.wildcards.model}", len(splits), unit="split")
    parts = []
    by_split, root = records_of_splits(list(smk.input.manifest), smk.input.splits, splits)
    for done, split in enumerate(splits, start=1):
        records = by_split[split]
        part = reference_loglik(checkpoint, records, root, features, device=smk.config["device"])
        part.insert(0, "split", split)
        parts.append(part)
        progress.update(done, split=split, records=len(records))
    write_table(pd.concat(parts, ignore_index=True), smk.output[0], meta={"model": smk.wildcards.model})


run(snakemake, main)  # noqa: F821
