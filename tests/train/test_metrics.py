"""Run logs: rows after the resumed step are dropped, a line cut short by a kill too."""

from __future__ import annotations

from train.metrics import MetricsLog, flatten, read_metrics


def test_resume_drops_rows_after_the_checkpoint_and_a_half_written_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
                                           '{"step": 3, "loss": 1.2}\n{"step": 4, "lo')
    log = MetricsLog(tmp_path, start_step=2)
    log.log(3, {"loss": 1.1, "skipped": {"no_caption": 2}})
    log.close()
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5},
                                      {"step": 3, "loss": 1.1, "skipped": {"no_caption": 2}}]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_flatten_joins_nested_keys_with_slashes():
    assert flatten({"val": {"t2v": {"R@1": 50.0}}, "loss": 1.0}) == {"val/t2v/R@1": 50.0, "loss": 1.0}
