"""Rule mfe_signals: MFEs x one captioner's generated captions -> signals/mfe/<model>.parquet.

Every (MFE, split) of the captioner some FB attack reads, in one job: a job per part paid ~8 s of
imports (open_clip, torch) and model loading for a few hundred captions (measured). Each part is
scored on its own (``mfe_signals`` per MFE, split and query, as before); rows carry ``mfe`` and
``split``, and readers select one part with ``m4i.io.read_split``."""
from m4i.attacks.queries import map_queries
from m4i.data.manifest import read_manifests
from m4i.io import M4IError, load_torch, read_table, select_part, write_table
from m4i.mfe import mfe_signals
from m4i.models.features import load_features
from m4i.progress import Progress
from m4i.workflow import run


def main(smk):
    import pandas as pd

    parts = [tuple(p) for p in smk.params.parts]
    if not parts:
        raise M4IError(f"mfe_signals {smk.wildcards.model}: no (MFE, split) to score")
    manifest, root = read_manifests(list(smk.input.manifest))
    captions = read_table(smk.input.captions)
    progress = Progress(f"mfe signals {smk.wildcards.model}", len(parts), unit="part")
    loaded, out = None, []
    for done, (mfe, split) in enumerate(parts, start=1):
        if mfe != loaded:  # parts come grouped by MFE: one MFE in memory at a time
            checkpoint, features = load_torch(smk.params.mfe_paths[mfe]), load_features(list(smk.params.features[mfe]))
            loaded = mfe
        rows = select_part(captions, split, where=smk.input.captions)
        part = map_queries(rows, lambda c: mfe_signals(checkpoint, c, manifest, root, features, device=smk.config["device"]))
        part.insert(0, "split", split)
        part.insert(0, "mfe", mfe)
        out.append(part)
        progress.update(done, mfe=mfe, split=split, records=len(rows))
    write_table(pd.concat(out, ignore_index=True), smk.output[0], meta={"model": smk.wildcards.model})


run(snakemake, main)  # noqa: F821
