"""`cifar-dcgan-sweep`: arms x seeds as DVC experiments on a Ray cluster, tracked on one
MLflow server.

Every trial is a fresh clone of the pushed baseline commit running the DVC experiment of
its arm's overrides and seed (`dvc repro`, then `dvc exp save`). It reports each epoch's
training checkpoint to Ray Tune, so a trial whose node dies is rerun on another node from
its last epoch, continuing the same MLflow run. A finished trial pushes its experiment to
the git remote (`dvc exp push`) and its outputs and run cache to the DVC remote. The judge
(train-evaluator) is trained once per sweep, before any trial, so that every machine scores
with the same one.

    cifar-dcgan-sweep --arm classic --arm lsgan train_gan.loss=least_squares --seeds 1 2 3 \\
        --storage /shared/ray --git-remote git@host:team/gan.git --dvc-remote s3://bucket/dvc \\
        --tracking-uri http://mlflow.internal:5000 --ray-address 10.0.0.1:6379

then `cifar-dcgan-compare --runs ...` on the same server compares the arms.
"""
