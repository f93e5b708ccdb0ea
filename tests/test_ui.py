"""The MLflow UI as a user sees it: a tiny pipeline run opened in headless Chromium."""

import shutil
import sys

import pytest

from conftest import free_port, run, start_server, stop_server, tiny_pipeline

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# MLflow 3.17's UI takes its GenAI / model-training switch from the browser (or this query),
# not from the experiment's kind tag; docs/tracking.md gives users this same link
MODEL_TRAINING = "workflowType=machine_learning"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_run_page_shows_loss_charts_and_the_snapshot_images(project, archive, tmp_path):
    from mlflow import MlflowClient
    from playwright.sync_api import sync_playwright

    tiny_pipeline(project, *archive)
    run(["dvc", "repro"], project)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifar10-dcgan")
    (train,) = client.search_runs([experiment.experiment_id], "tags.stage = 'train-gan'")

    port = free_port()
    ui = start_server(
        project, port, command=["ui", "--backend-store-uri", f"sqlite:///{project / 'mlflow.db'}"]
    )
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
            )
            page = browser.new_page(viewport={"width": 1500, "height": 3200})
            url = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs/{train.info.run_id}"
            page.goto(f"{url}/model-metrics?{MODEL_TRAINING}", wait_until="load")
            # the UI's scripts render the page; on 2 cores busy with other training that took
            # over a minute once, so allow three
            page.get_by_text("generated", exact=True).first.wait_for(timeout=180_000)
            titles = page.inner_text("body")
            for chart in ("d1", "d2", "g", "acc_real", "acc_fake", "generated"):
                assert f"\n{chart}\n" in titles, f"no '{chart}' chart on the run page"
            page.screenshot(path=tmp_path / "ui-run-charts.png")

            # the image chart: full screen, slider to the last snapshot, the grid is shown
            card = (
                page.locator("div", has=page.get_by_text("generated", exact=True))
                .filter(has=page.locator("input[type=number]"))
                .last
            )
            card.get_by_role("button").first.click()
            number = page.locator("input[type=number]").last
            number.wait_for()
            box, handle = number.bounding_box(), page.get_by_role("slider").last.bounding_box()
            page.mouse.click(box["x"] - 20, handle["y"] + handle["height"] / 2)
            image = page.locator("img[src*='generated%2Bstep%2B2%2B']").first
            image.wait_for(timeout=30_000)
            assert image.evaluate("img => img.complete && img.naturalWidth > 0")
            page.screenshot(path=tmp_path / "ui-generated-step-2.png")

            # the experiment opens on its runs table (model training), not the GenAI overview
            experiment_page = (
                f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}?{MODEL_TRAINING}"
            )
            page.goto(experiment_page, wait_until="load")
            page.get_by_text(train.info.run_name, exact=True).first.wait_for(timeout=180_000)
            body = page.inner_text("body")
            for stage in ("prepare", "train-evaluator"):  # (select-generator is nested under train-gan)
                assert train.info.run_name.replace("train-gan", stage) in body
            assert "token usage" not in body.lower()
            page.screenshot(path=tmp_path / "ui-experiment.png")
            browser.close()
    finally:
        stop_server(ui)
    print(f"screenshots in {tmp_path}", file=sys.stderr)
