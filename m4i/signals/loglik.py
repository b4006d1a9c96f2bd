"""Gray-box signal: how likely a captioner finds each reference caption of a record.

For every record and each of its reference captions, the teacher-forced mean token
log-likelihood under the model: the mean over the caption's tokens w_1..w_n and ``<end>`` of
log p(w_t | image, <start> w_1..w_{t-1}), exactly the per-token quantity the captioner was
trained to raise (its cross-entropy, ``m4i.models.train.caption_loss``, negated). A member's
captions were trained on, so they get a higher likelihood; the five references act as five
queries per record, like LiRA's augmentations. Needs the model's output distribution (gray-box
access), not the generated caption.

Words outside the captioner's vocabulary are scored as ``<unk>``, as in training. Signals of
several models are comparable only when they share one vocabulary (the same token -> id map).
"""
from __future__ import annotations

import logging
import math

import pandas as pd
import torch

from m4i.io import M4IError
from m4i.models.inputs import check_records
from m4i.models.train import input_source, load_captioner, pad_tokens
from m4i.progress import Progress

log = logging.getLogger("m4i.loglik")

COLUMNS = ["record_id", "ref_loglik", "ref_loglik_mean"]


def reference_loglik(checkpoint: dict, records: pd.DataFrame, root, features: dict | None, device: str = "cpu",
                     batch_size: int = 64) -> pd.DataFrame:
    """One row per record, in record order: ``record_id``, ``ref_loglik`` (list of floats, one
    mean token log-likelihood per reference caption, in the record's caption order) and
    ``ref_loglik_mean`` (their mean).

    ``records``: a manifest slice (``record_id``, ``captions``, and ``image`` for image
    encoders); ``features``: the feature cache for captioners that read it, else None.
    Records go through the model in fixed chunks of ``batch_size`` records (all their captions
    together), in record order, so the same inputs give the same table.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise M4IError(f"reference_loglik: batch_size must be an integer >= 1, got {batch_size!r}")
    check_records(records, "records to score")
    records = records.reset_index(drop=True)
    for rid, caps in zip(records["record_id"], records["captions"]):
        if isinstance(caps, str) or len(caps) == 0 or not all(isinstance(c, str) for c in caps):
            raise M4IError(f"record {rid!r}: 'captions' must be a non-empty list of strings")
    model, vocab = load_captioner(checkpoint)
    model.to(device).eval()
    limit = getattr(model, "max_positions", None)  # a transformer decoder sees at most this many inputs
    source = input_source(model, checkpoint["arch"], records, root, features)
    per_record: list[list[float]] = []
    progress = Progress("reference loglik", math.ceil(len(records) / batch_size), unit="chunk", logger=log,
                        min_interval_s=2.0)
    for start in range(0, len(records), batch_size):
        idx = list(range(start, min(start + batch_size, len(records))))
        seqs, owner = [], []
        for local, i in enumerate(idx):
            for c in records.at[i, "captions"]:
                ids = vocab.encode(c)
                if limit is not None and len(ids) - 1 > limit:
                    raise M4IError(f"record {records.at[i, 'record_id']!r}: a reference caption has {len(ids) - 2} "
                                   f"words, more than the captioner's {limit} decoder positions allow")
                seqs.append(ids)
                owner.append(local)
        tokens = pad_tokens(seqs, vocab.pad).to(device)
        owner_t = torch.as_tensor(owner, dtype=torch.long)
        with torch.no_grad():
            if getattr(model, "shares_images", False):  # encode each image once, not once per caption
                logits = model(source.take(idx).to(device), tokens, owner_t.to(device))
            else:
                logits = model(source.take([idx[o] for o in owner]).to(device), tokens)
            logp = torch.log_softmax(logits.float(), dim=-1)
            target = tokens[:, 1 : logits.shape[1] + 1]
            tok_lp = logp.gather(2, target.unsqueeze(-1)).squeeze(-1)
            mask = (target != vocab.pad).to(tok_lp.dtype)
            mean = ((tok_lp * mask).sum(dim=1) / mask.sum(dim=1)).cpu().double()
        values = [[] for _ in idx]
        for o, v in zip(owner, mean.tolist()):
            values[o].append(float(v))
        per_record.extend(values)
        progress.update(start // batch_size + 1, records=len(per_record))
    return pd.DataFrame({
        "record_id": [str(r) for r in records["record_id"]],
        "ref_loglik": per_record,
        "ref_loglik_mean": [float(sum(v) / len(v)) for v in per_record],
    }, columns=COLUMNS)
