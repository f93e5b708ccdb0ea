"""Did it help? Compare training configurations across seeds, from the tracked runs.

    cifar-dcgan-compare                      # every finished train-gan run of the experiment
    cifar-dcgan-compare --runs base-1 base-2 base-3 smooth-1 smooth-2 smooth-3
    cifar-dcgan-compare --baseline train_gan.label_smoothing=0.0 --fcd-threshold 60

Reads the finished `train-gan` runs of the MLflow experiment (`tracking.experiment`), groups
them by the params that differ between them (the seed aside: runs that differ only in
`train_gan.seed` are replicates), and compares every group with a baseline group: the one at
the values of `params.yaml`, or the one `--baseline key=value ...` names.

Per group: the seeds, mean and 95% t-interval of best FCD and diversity, median and
interquartile range of last FCD, KID and class entropy, diverged and collapsed runs, the FCD
curve, seconds per iteration, and how many seeds reached the FCD threshold ("k of n", the
rest censored) and when. Against the baseline, every arm at once: the evidence (iterations,
training images, the judge and its accuracy, seeds, the number of comparisons), the
difference of mean best FCD with its 95% Welch interval and the interval for all arms at
once, a verdict corrected for the number of arms (Holm) or an equivalence within
`--min-effect` (two one-sided tests), what the interval rules out in words, and the seeds
per arm a sweep would need to tell `--min-effect`, from the sd pooled over all groups. With
fewer than ~8 seeds per group a bootstrap has too few distinct resamples, so the intervals
are t-intervals. Runs of one configuration that ran different training code are not pooled
unless `--pool-code` asks. `--from-json` judges an earlier comparison.json again.

A run continued with more epochs (its `changed_params` tag) counts at the epochs it ended
with. Left out, each with a line saying why: unfinished, flagged and unscored runs, runs whose
history does not start at epoch 1 (a training resumed into a new MLflow run), and NaN or
infinite values (a run with no finite FCD is left out whole).

Writes `report.md` (also printed), `comparison.json`, `fcd_curves.png` and `grids.png` into
`--out` (default `reports/compare`) and logs them to an MLflow run (stage `compare`).
"""

# runs.py    the runs of the MLflow store
# groups.py  their grouping by configuration, and the baseline group
# stats.py   the statistics of one group, as pure functions of numbers
# verdicts.py every arm against the baseline: corrections, equivalence, what is ruled out, plans
# tables.py  the docs' result tables, generated from their comparison.json
# text.py    run names and values made safe to show
# report.py  the result as data (comparison.json) and as markdown (report.md)
# plots.py   fcd_curves.png and grids.png
# cli.py     the command line
