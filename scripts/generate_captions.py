"""Rule generate_captions: one captioner x every split read of it -> captions/<id>.parquet.

One job per captioner (a ``split`` column; readers select one with ``m4i.io.read_split``): a job
per split paid seconds of imports and model and feature loading for a few hundred records. Each
split is decoded on its own, with the same seed, exactly as a job of its own did."""
from m4i.data.manifest import records_of_splits
from m4i.identity import ModelId
from m4i.io import M4IError, load_torch, write_table
from m4i.models.features import load_features
from m4i.models.generate import generate_captions
from m4i.progress import Progress
from m4i.seeding import decode_seed
from m4i.workflow import run


def main(smk):
    import pandas as pd

    model = ModelId.parse(smk.wildcards.model)
    splits = list(smk.params.splits)
    if not splits:
        raise M4IError(f"generate_captions {model}: no split to decode")
    decode = dict(smk.params.decode)
    seed = decode_seed(model) if decode.get("method") == "sample" else None
    checkpoint, features = load_torch(smk.input.model), load_features(smk.input.features)
    progress = Progress(f"captions {model}", len(splits), unit="split")
    parts = []
    by_split, root = records_of_splits(list(smk.input.manifest), smk.input.splits, splits)
    for done, split in enumerate(splits, start=1):
        records = by_split[split]
        part = generate_captions(checkpoint, records, root, features, decode, device=smk.config["device"], seed=seed)
        part.insert(0, "split", split)
        parts.append(part)
        progress.update(done, split=split, records=len(records))
    write_table(pd.concat(parts, ignore_index=True), smk.output[0], meta={"model": str(model), "splits": splits})


run(snakemake, main)  # noqa: F821
