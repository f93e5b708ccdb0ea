"""The finished train-gan runs of an MLflow experiment, as the comparison needs them: every
page of the search, each run at the configuration it ended with, only its finite values, and
a reason for every run left out (unfinished, flagged, unscored, partial)."""

import dataclasses
import math
import sys
from collections.abc import Iterator, Sequence

from cifar_dcgan.compare import stats
from cifar_dcgan.compare.text import plain
from cifar_dcgan.config.train_gan import EMA_COVERED
from cifar_dcgan.store import tag_condition

# Keys added to `model` / `train_gan` after runs were first compared, at the value that does what
# the pipeline did before the key existed (each arrived off). A run tracked before then counts as
# these values in a comparison. A key added later belongs here, at its classic value.
BEFORE_ADDED = {
    "model.d_spectral_norm": False,
    "train_gan.g_ema": 0.0,
    "train_gan.loss": "bce",
    "train_gan.d_steps": 1,
    "train_gan.diff_augment": [],
}

SEED = "train_gan.seed"
PRECISION = "train_gan.precision"
RESOLVED = "precision_resolved"  # a tag: what `precision: auto` became on the run's machine
MACHINE = ("cpu", "gpu", "onednn", "bf16_kernels")  # tags a run's speed depends on (`machine_tags`)
LAST = {"last_kid": "kid", "class_entropy": "class_entropy", "diversity": "diversity"}  # of a snapshot
HISTORIES = ("fcd", "epoch_seconds", "seconds_per_iteration", "load_per_core", *LAST.values())  # per epoch
EPOCHS, SNAPSHOT_EVERY = "train_gan.epochs", "train_gan.snapshot_every"
CHANGED = "changed_params"  # a tag: the params a continued run changed (`key: logged -> final`)
PAGE = 1000  # runs per search request (MLflow's default page)
DIVERGED = 3.0  # a last FCD this many times the run's best: it diverged (its best snapshot still counts)


@dataclasses.dataclass
class Run:
    """One finished, scored training run, as the comparison needs it: only its finite values
    (`ignored` names the NaN or infinite ones left out)."""

    run_id: str
    name: str
    params: dict[str, str]
    seed: str
    evaluator: str
    curve: dict[int, float]  # epoch -> FCD
    last: dict[str, float]  # KID, class entropy, diversity of the last snapshot
    history: dict[str, dict[int, float]]  # the same per epoch, for a time budget
    epoch_seconds: dict[int, float]
    iterations_per_epoch: float
    start_time: int
    assumed: tuple[str, ...] = ()  # params tracked before they existed, counted at their classic value
    machine: dict[str, str] = dataclasses.field(default_factory=dict)  # MACHINE tags it has
    auto: bool = False  # ran `precision: auto`: its precision param is what that became on its machine
    continued: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # key -> (logged, final)
    ignored: str = ""  # its NaN or infinite values, left out: "1 NaN or infinite value (fcd at epoch 2)"
    judge_task: str = "classes"  # rotation: its class entropy says how upright, not how varied
    code: str = ""  # digest of the training code (`checkpoint.code_digest`); "" tracked before it was
    iterations: int | None = None  # of the whole training, None when unknown
    training_images: int | None = None
    judge_accuracy: float | None = None  # the evaluator's test accuracy
    load: float | None = None  # median runnable processes per core over its epochs
    real_entropy: float | None = None  # class entropy of as many real images as a snapshot scores
    ema: str = ""  # why its g_ema average could not show its decay, or ""

    @property
    def diverged(self) -> bool:
        """Its last snapshot far worse than its best: the training blew up on the way."""
        return self.last_fcd > DIVERGED * self.best_fcd

    @property
    def best_fcd(self) -> float:
        return min(self.curve.values())

    @property
    def last_fcd(self) -> float:
        return self.curve[max(self.curve)]

    def values(self) -> dict[str, float]:
        return {"best_fcd": self.best_fcd, "last_fcd": self.last_fcd, **self.last}

    def seconds_per_iteration(self) -> float | None:
        return stats.seconds_per_iteration(self.epoch_seconds, self.iterations_per_epoch)

    def within(self, seconds: float) -> "Run | None":
        """The run as it stood after `seconds` of training: only the snapshots taken by then
        (equal wall-clock for configurations of different cost); None before the first."""
        kept = [e for e in sorted(self.curve) if stats.training_seconds(self.epoch_seconds, e) <= seconds]
        if not kept:
            return None
        return dataclasses.replace(
            self,
            iterations=round(kept[-1] * self.iterations_per_epoch) if self.iterations_per_epoch else None,
            curve={e: self.curve[e] for e in kept},
            epoch_seconds={e: s for e, s in self.epoch_seconds.items() if e <= kept[-1]},
            last={k: _last(self.history[k], kept[-1]) for k in self.last},
        )

    def reaches(self, threshold: float) -> tuple[float, int | None] | None:
        """(training seconds, iterations) until the FCD first is at most `threshold`, or None."""
        return stats.reaches(self.curve, self.epoch_seconds, self.iterations_per_epoch, threshold)


def load_runs(client, experiment_id: str, names: Sequence[str] = (), tag: str | None = None):
    """The comparable train-gan runs, and one line for every run left out and why; with
    `names`, also for a finished run outside them of the same params and seed as one inside
    (a rerun: the comparison would otherwise never say it exists)."""
    wanted = set(names)
    runs, skipped, others, chosen = [], [], {}, {}
    for r in stage_runs(client, experiment_id, tag):
        name = r.data.tags.get("dvc_exp_name") or r.info.run_name
        if wanted and name not in wanted and r.info.run_name not in wanted:
            if r.info.status == "FINISHED":
                others.setdefault(_configuration(r), []).append(r.info.run_name)
            continue
        loaded = _load(client, r)
        if isinstance(loaded, Run):
            runs.append(loaded)
            chosen[_configuration(r)] = loaded.name
        else:
            skipped.append(f"run {r.info.run_id[:8]} ({plain(r.info.run_name)}): {loaded}, skipped")
    for configuration, names_outside in others.items():
        if configuration in chosen:
            skipped += [
                f"run {plain(outside)} has the params and seed of {plain(chosen[configuration])} but is not "
                "among --runs: it is left out (name it to compare it instead)"
                for outside in names_outside
            ]
    return runs, skipped


def _configuration(r) -> tuple:
    """A run's params, seed included, with the keys added since at their classic values."""
    return tuple(sorted({**{k: str(v) for k, v in BEFORE_ADDED.items()}, **r.data.params}.items()))


def stage_runs(client, experiment_id: str, tag: str | None = None) -> Iterator:
    """Every train-gan run of the experiment (with tag `key=value`, if given), newest first.
    One search returns at most a page of runs and a store holds any number: read every page."""
    key, _, value = (tag or "").partition("=")
    condition = tag_condition(key, value) if tag else None
    filters = " and ".join(["tags.stage = 'train-gan'", *([condition] if condition else [])])
    seen, token = set(), None
    while True:
        page = client.search_runs([experiment_id], filters, max_results=PAGE, page_token=token)
        for r in page:
            # a run started while we read shifts the pages by one: it would come twice
            if r.info.run_id not in seen and (not tag or r.data.tags.get(key) == value):
                seen.add(r.info.run_id)
                yield r
        token = page.token
        if not token:
            return


def _load(client, r) -> "Run | str":
    """The MLflow run `r` as the comparison needs it, or why it is left out."""
    if r.info.status != "FINISHED":
        return r.info.status.lower()
    if r.data.metrics.get("failures", 0) or r.data.tags.get("failures"):
        return "flagged by failure detection"
    histories = {key: client.get_metric_history(r.info.run_id, key) for key in HISTORIES}
    if not histories["fcd"]:
        return "its snapshots were not scored (no FCD)"
    if "evaluator_digest" not in r.data.tags:
        return "no evaluator_digest tag (tracked by an older version)"
    by_step = {key: {m.step: m.value for m in values} for key, values in histories.items()}
    assumed = {k: str(v) for k, v in BEFORE_ADDED.items() if k not in r.data.params}
    params = {**assumed, **r.data.params}
    continued = _continued(params, r.data.tags.get(CHANGED, ""))
    params |= {key: final for key, (_, final) in continued.items()}  # what the run ended as
    partial = _partial(params, by_step)
    if partial:
        return partial
    finite = {key: {e: v for e, v in steps.items() if _finite(v)} for key, steps in by_step.items()}
    if not finite["fcd"]:
        return f"none of its {len(by_step['fcd'])} FCD values is a finite number"
    bad = {key: sorted(set(steps) - set(finite[key])) for key, steps in by_step.items()}
    count = sum(map(len, bad.values()))
    where = "; ".join(f"{key} at epoch {_epochs(epochs)}" for key, epochs in bad.items() if epochs)
    ignored = f"{count} NaN or infinite value{'s' if count > 1 else ''} ({where})" if count else ""
    auto = params.get(PRECISION) == "auto"
    if auto:  # the same training as the precision it became, named: bf16 here, float32 there
        params[PRECISION] = r.data.tags.get(RESOLVED, "auto (untagged)")
    return Run(
        run_id=r.info.run_id,
        name=r.info.run_name,
        params=params,
        seed=r.data.params.get(SEED, "?"),
        evaluator=r.data.tags["evaluator_digest"],
        curve=finite["fcd"],
        last={name: _last(finite[key]) for name, key in LAST.items()},
        history={name: finite[key] for name, key in LAST.items()},
        epoch_seconds=finite["epoch_seconds"],
        iterations_per_epoch=_iterations_per_epoch(finite),
        start_time=r.info.start_time,
        assumed=tuple(sorted(assumed)),
        machine={key: r.data.tags[key] for key in MACHINE if key in r.data.tags},
        auto=auto,
        continued=continued,
        ignored=ignored,
        judge_task=r.data.tags.get("judge_task", "classes"),
        **_evidence(r, params, finite),
    )


def _evidence(r, params: dict[str, str], finite: dict[str, dict[int, float]]) -> dict:
    """What a verdict on the run rests on: its code, length, data, judge and load (tags of
    train-gan; the iterations from its params where an older run lacks the tag)."""
    tags = r.data.tags
    per_epoch, epochs = _iterations_per_epoch(finite), _whole(params.get(EPOCHS))
    iterations = _whole(tags.get("iterations")) or (per_epoch * epochs if per_epoch and epochs else None)
    loads = sorted(finite["load_per_core"].values())
    return {
        "code": tags.get("code_digest", ""),
        "iterations": iterations,
        "training_images": _whole(tags.get("training_images")),
        "judge_accuracy": _number(tags.get("judge_accuracy")),
        "load": loads[len(loads) // 2] if loads else None,
        "real_entropy": r.data.metrics.get("class_entropy_real_images"),
        "ema": ema_note(params, tags.get("g_ema_coverage"), iterations),
    }


def ema_note(params: dict[str, str], coverage: str | None, iterations: int | None) -> str:
    """Why the run's g_ema average could not show the decay it names, or "". Runs tracked
    before the average was bias-corrected warmed up as min(g_ema, (1 + t) / (10 + t))."""
    decay = _number(params.get("train_gan.g_ema")) or 0.0
    if decay <= 0:
        return ""
    if coverage is not None:
        share = _number(coverage)
        if share is not None and share < EMA_COVERED:
            return (
                f"g_ema {decay:g} averages over about {1 / (1 - decay):,.0f} updates; its "
                f"{iterations or '?'} fill {share:.0%} of that"
            )
        return ""
    if iterations is None:
        return ""  # its length is unknown: nothing to say
    reached = min(decay, iterations / (iterations + 9))
    if reached < decay:
        return (
            f"g_ema {decay:g} warmed up as min(g_ema, (1 + t) / (10 + t)) in this older run: {reached:.3f} "
            f"at its last update ({iterations}), an average of about its last {1 / (1 - reached):.0f}"
        )
    return ""


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _continued(params: dict[str, str], tag: str) -> dict[str, tuple[str, str]]:
    """The params a run changed when it was continued (`changed_params`: `key: logged -> final;
    ...`, e.g. more epochs): MLflow params cannot change, so the tag holds what it ended as."""
    changes = {}
    for item in tag.split("; ") if tag else ():
        key, _, change = item.partition(": ")
        logged, arrow, final = change.partition(" -> ")
        if arrow and params.get(key) == logged:
            changes[key] = (logged, final)
    return changes


def _partial(params: dict[str, str], by_step: dict[str, dict[int, float]]) -> str | None:
    """Why the run's history does not start where its params say, or None. A training resumed
    into a new MLflow run (its first run deleted) has only the epochs after its checkpoint:
    its best and last FCD are not those of a whole training."""
    timed = by_step["epoch_seconds"]  # logged at every epoch's end, with the epoch's losses
    if timed:
        missing = sorted(set(range(1, max(timed) + 1)) - set(timed))
        if missing:
            return (
                f"a partial history: no losses or timing for epoch {_epochs(missing)} of its {max(timed)} "
                "(resumed into a new MLflow run?)"
            )
    every, epochs = _whole(params.get(SNAPSHOT_EVERY)), _whole(params.get(EPOCHS))
    if not every or not epochs:
        return None
    scored = by_step["fcd"]
    due = [e for e in range(1, max([*scored, *timed]) + 1) if e % every == 0 or e == epochs]
    missing = [e for e in due if e not in scored]
    if missing:
        return (
            f"a partial history: no FCD for snapshot epoch {_epochs(missing)}, which its params "
            f"({EPOCHS}={epochs}, {SNAPSHOT_EVERY}={every}) say it took"
        )
    return None


def _finite(value: float) -> bool:
    """Neither NaN nor infinite. MLflow's SQL stores keep an infinite value as the largest float."""
    return math.isfinite(value) and abs(value) < sys.float_info.max


def _whole(value: str | None) -> int | None:
    """A param logged as a positive whole number, or None."""
    return int(value) if value and value.isdigit() and int(value) > 0 else None


def _epochs(epochs: list[int], most: int = 6) -> str:
    """Epochs as runs of consecutive ones ("1-2, 5"), the first `most` of them."""
    spans: list[list[int]] = []
    for e in epochs:
        if spans and e == spans[-1][1] + 1:
            spans[-1][1] = e
        else:
            spans.append([e, e])
    shown = [f"{a}-{b}" if b > a else str(a) for a, b in spans[:most]]
    return ", ".join(shown) + (", ..." if len(spans) > most else "")


def _last(values: dict[int, float], epoch: float = math.inf) -> float:
    """The value at the latest epoch up to `epoch`; NaN when there is none."""
    known = [e for e in values if e <= epoch]
    return values[max(known)] if known else math.nan


def _iterations_per_epoch(finite: dict[str, dict[int, float]]) -> int:
    """Iterations of an epoch, from the last epoch whose time and time per iteration are both
    known; 0 (unknown) when none is."""
    seconds, per_iteration = finite["epoch_seconds"], finite["seconds_per_iteration"]
    for epoch in sorted(set(seconds) & set(per_iteration), reverse=True):
        steps = seconds[epoch] / per_iteration[epoch] if per_iteration[epoch] > 0 else math.nan
        if math.isfinite(steps) and steps > 0:
            return round(steps)
    return 0
