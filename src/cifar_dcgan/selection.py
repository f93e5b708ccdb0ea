"""Pick one generator snapshot by a rule in params, record why, and show every candidate.

    python stages/select_generator.py   (what `dvc repro select-generator` runs)

Reads only what DVC tracks (`snapshots.csv`, the snapshot files and their probe grids), so
DVC knows when the choice must be redone. Rules:
- `select_generator.epoch: N`: the snapshot of epoch N (a cherry-pick made in the MLflow UI);
- otherwise `select_generator.criterion`: `fcd` or `kid` (the lowest: the snapshot whose
  images are statistically closest to real ones, see evaluator.py), `last` (the final
  snapshot), or `acc_real` (D's accuracy on real images closest to `target_acc_real`).
Snapshots flagged by failure detection (NaN losses, a discriminator that has won) are never chosen.
"""

import csv
import json
import math
import shutil
from pathlib import Path

import matplotlib.image
import numpy as np

from cifar_dcgan.config.select import SelectParams
from cifar_dcgan.errors import PipelineError
from cifar_dcgan.fid import true_fid
from cifar_dcgan.images import plt


def read_snapshots(snapshots_csv: Path, snapshots_dir: Path) -> list[dict]:
    """Rows of snapshots.csv as numbers, each with its file and whether it may be chosen."""
    try:
        with open(snapshots_csv, newline="") as file:
            rows = [
                {k: v if k == "flag" else float(v) for k, v in row.items()} for row in csv.DictReader(file)
            ]
    except (OSError, ValueError) as error:
        raise PipelineError(
            f"cannot read {snapshots_csv}: {error}; run `dvc repro train-gan` first"
        ) from None
    if not rows:
        raise PipelineError(f"{snapshots_csv} lists no snapshots; run `dvc repro train-gan` first")
    for row in rows:
        row["epoch"] = int(row["epoch"])
        row["path"] = snapshots_dir / f"epoch_{row['epoch']:03d}.keras"
        row["flag"] = row.get("flag") or (
            "nan" if any(not math.isfinite(v) for v in row.values() if isinstance(v, float)) else ""
        )
        row["usable"] = not row["flag"]
        if not row["path"].is_file():
            raise PipelineError(f"snapshot file {row['path']} is missing; run `dvc repro train-gan`")
    return rows


def choose(rows: list[dict], params: SelectParams) -> tuple[dict, str]:
    """Return (the chosen row, a sentence saying why)."""
    if params.epoch is not None:
        by_epoch = {row["epoch"]: row for row in rows}
        if params.epoch not in by_epoch:
            raise PipelineError(
                f"params.yaml: select_generator.epoch = {params.epoch} is not a saved snapshot; "
                f"available epochs: {sorted(by_epoch)}"
            )
        row = by_epoch[params.epoch]
        if not row["usable"]:
            raise PipelineError(
                f"select_generator.epoch = {params.epoch}: that snapshot is flagged "
                f"'{row['flag']}' (training failed there); pick another epoch"
            )
        return row, f"manual pick: select_generator.epoch = {params.epoch}"
    usable = [row for row in rows if row["usable"]]
    if not usable:
        raise PipelineError(
            "every snapshot is flagged as failed (see reports/train_gan/failures.json): "
            "lower the learning rates in params.yaml and retrain"
        )
    if params.criterion == "last":
        return usable[-1], "criterion last: the final usable snapshot"
    if params.criterion in ("fcd", "kid"):
        key = params.criterion
        if any(key not in row for row in usable):
            raise PipelineError(
                f"select_generator.criterion = {key}, but the snapshots have no '{key}' column: they "
                "were not scored by the evaluator. Run `dvc repro` (train-evaluator, then train-gan) "
                "or choose criterion last | acc_real"
            )
        row = min(usable, key=lambda r: (r[key], -r["epoch"]))
        return row, f"criterion {key}: the lowest {key.upper()} ({row[key]:.4g}) of {len(usable)} snapshots"
    row = min(usable, key=lambda r: (abs(r["acc_real"] - params.target_acc_real), -r["epoch"]))
    return row, (
        f"criterion acc_real: D accuracy on real images closest to {params.target_acc_real} "
        f"(latest epoch on ties)"
    )


def contact_sheet(rows: list[dict], chosen: int, grids_dir: Path, path: Path) -> None:
    """Every snapshot's probe grid side by side with its metrics; the chosen one framed."""
    columns = min(len(rows), 5)
    n_rows = -(-len(rows) // columns)
    figure, axes = plt.subplots(n_rows, columns, figsize=(3.2 * columns, 4.1 * n_rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        grid_path = grids_dir / f"epoch_{row['epoch']:03d}.png"
        if grid_path.is_file():
            ax.imshow(matplotlib.image.imread(grid_path))
        is_chosen = row["epoch"] == chosen
        quality = f"FCD {row['fcd']:.2f}  KID {row['kid']:.4f}\n" if "fcd" in row else ""
        ax.set_title(
            f"{'CHOSEN: ' if is_chosen else ''}epoch {row['epoch']}\n{quality}"
            f"acc real {row['acc_real']:.2f} / fake {row['acc_fake']:.2f}\n"
            f"d1 {row['d1']:.2f} d2 {row['d2']:.2f} g {row['g']:.2f}",
            fontsize=9,
            color="crimson" if is_chosen else "black",
            fontweight="bold" if is_chosen else "normal",
        )
        if is_chosen:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color="crimson", linewidth=4)
    figure.suptitle(
        "Snapshots: 7x7 samples from the same fixed latent points, with image quality\n"
        "(FCD, KID: lower is better), D's accuracy and mean losses"
    )
    figure.tight_layout(pad=1.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)


def select_generator(
    snapshots_csv: Path,
    snapshots_dir: Path,
    grids_dir: Path,
    training_run_id: str | None,
    params: SelectParams,
    out_model: Path,
    reports_dir: Path,
    test_images: np.ndarray | None = None,
    latent_distribution: str = "gaussian",
) -> dict:
    """Copy the chosen snapshot to `out_model`; write selection.json (everything about the
    choice), metrics.json (its epoch, FCD and KID: what `dvc exp show` lists) and the contact sheet.
    With `test_images` and `params.fid_samples` > 0, also the chosen generator's true FID."""
    rows = read_snapshots(snapshots_csv, snapshots_dir)
    chosen, reason = choose(rows, params)
    out_model.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_model.with_suffix(".tmp")
    shutil.copyfile(chosen["path"], tmp)
    tmp.replace(out_model)
    selection = {
        "epoch": chosen["epoch"],
        "rule": reason,
        **{f"chosen_{k}": chosen[k] for k in ("fcd", "kid") if k in chosen},
        **{f"last_{k}": rows[-1][k] for k in ("epoch", "fcd", "kid") if k in rows[-1]},
        "snapshot": str(chosen["path"]),
        "training_run_id": training_run_id,
        "candidates": [{k: (str(v) if isinstance(v, Path) else v) for k, v in row.items()} for row in rows],
    }
    if params.fid_samples and test_images is not None:
        selection["fid"], selection["fid_note"] = true_fid(
            out_model, test_images, params.fid_samples, latent_distribution
        )
        print(selection["fid_note"], flush=True)
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    headline = {
        "chosen_epoch": chosen["epoch"],
        **{f"chosen_{k}": chosen[k] for k in ("fcd", "kid") if k in chosen},
    }
    (reports_dir / "metrics.json").write_text(json.dumps(headline, indent=2) + "\n")
    contact_sheet(rows, chosen["epoch"], grids_dir, reports_dir / "contact_sheet.png")
    return selection


def version_tags(selection: dict, params: SelectParams, fcd_samples: int, training: dict) -> dict[str, str]:
    """Tags of the registered version: what the promotion policy compares (FCDs measured the
    same way: evaluator digest, sample count) and where the generator came from."""
    tags = {
        "epoch": selection["epoch"],
        "hand_picked": str(params.epoch is not None).lower(),
        "fcd": selection.get("chosen_fcd"),
        "fcd_samples": fcd_samples,
        "evaluator_digest": training.get("evaluator_digest"),
        "training_run_id": training.get("run_id"),
    }
    return {key: str(value) for key, value in tags.items() if value is not None}
