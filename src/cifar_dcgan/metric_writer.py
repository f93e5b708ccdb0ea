"""Metric values sent to one MLflow run in batches, on the tracker's writer thread, and
kept when the store refuses them (a locked database, a server restarting): training never
waits for the store, and nothing is lost silently."""

import json
import time
from concurrent.futures import Future

from cifar_dcgan.store import redact

MAX_BATCH = 1000  # MLflow's limit of metric values per log_batch request


class MetricWriter:
    """Sends metric values to one run in batches, on a writer thread, and keeps what the store
    refuses: sent again at the next flush; at the end retried for a while, and what still
    cannot be stored is written to `spill_path` (JSON lines)."""

    def __init__(self, client, run_id: str, uri: str, writer, spill_path, retries: int, retry_delay: float):
        self.client, self.run_id, self.uri, self.writer = client, run_id, uri, writer
        self.spill_path, self.retries, self.retry_delay = spill_path, retries, retry_delay
        self.pending: list[tuple[Future, list]] = []  # (a sent batch, its metrics), not yet confirmed
        self.backlog = []  # metrics the store refused, to send again
        self.errors: list[str] = []

    def log(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._send([Metric(key, float(value), now, int(step)) for key, value, step in points])

    def flush(self, final: bool) -> None:
        """Confirm what was sent. Refused values are sent again: once (`final=False`, between
        epochs) or until stored or out of retries (`final=True`, then spilled to a file)."""
        self._collect(wait=final)  # between epochs, a slow or dead store must not hold training
        for attempt in range(self.retries if final else 1):
            if not self.backlog:
                break
            if attempt:
                time.sleep(self.retry_delay)
            self._send(self.backlog)
            self._collect(wait=final)
        if final and self.backlog:
            self._spill()

    def _send(self, metrics: list) -> None:
        if self.backlog is metrics:
            self.backlog = []
        for start in range(0, len(metrics), MAX_BATCH):
            chunk = metrics[start : start + MAX_BATCH]
            future = self.writer.submit(self.client.log_batch, self.run_id, metrics=chunk, synchronous=True)
            self.pending.append((future, chunk))

    def _collect(self, wait: bool = True) -> None:
        """Check sent batches; without `wait`, only those already finished (never blocks)."""
        still_running = []
        for future, chunk in self.pending:
            if not wait and not future.done():
                still_running.append((future, chunk))
                continue
            try:
                future.result()
            except Exception as error:  # any failure of the store: keep the values for later
                self._refused(chunk, error)
        self.pending = still_running

    def _refused(self, chunk: list, error: Exception) -> None:
        self.backlog.extend(chunk)
        self.errors.append(
            f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        )
        print(
            f"warning: tracking store {redact(self.uri)} refused {len(chunk)} value(s) "
            f"({self.errors[-1]}); keeping them to send again",
            flush=True,
        )

    def _spill(self) -> None:
        lost = [
            {"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp} for m in self.backlog
        ]
        self.errors.append(f"{len(lost)} value(s) could not be stored")
        if self.spill_path is not None:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "a") as file:
                file.writelines(json.dumps({"run_id": self.run_id, **m}) + "\n" for m in lost)
            print(f"warning: {len(lost)} metric value(s) written to {self.spill_path} instead", flush=True)
        self.backlog = []
