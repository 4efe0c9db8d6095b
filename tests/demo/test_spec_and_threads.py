"""Recipe validation and the thread-count choice, both pure logic."""

from __future__ import annotations

import pytest

from splitserve.demo.spec import DemoSpec
from splitserve.demo.threads import ThreadTuner


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"hidden_size": 250, "num_attention_heads": 4}, "not divisible by num_attention_heads"),
        ({"num_attention_heads": 4, "num_key_value_heads": 3}, "num_key_value_heads"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"train_seq_len": 4096}, "max_position_embeddings"),
        ({"train_seconds": 0.0}, "train_seconds"),
        ({"train_seconds": float("nan")}, "train_seconds"),
        ({"train_seconds": None, "max_steps": None}, "train_seconds or max_steps"),
        ({"max_steps": 0}, "max_steps"),
        ({"learning_rate": -1.0}, "learning_rate"),
    ],
)
def test_bad_spec_values_are_value_errors_naming_the_field(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DemoSpec().replace(**overrides)


def test_replace_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="hidden_sise"):
        DemoSpec().replace(hidden_sise=128)


def _run(tuner: ThreadTuner, step_s_by_threads: dict[int, float], num_steps: int) -> list[int]:
    used = []
    for _ in range(num_steps):
        threads = tuner.threads_for_next_step()
        used.append(threads)
        tuner.record(step_s_by_threads[threads])
    return used


def test_tuner_keeps_all_cores_when_they_are_faster() -> None:
    tuner = ThreadTuner(max_threads=4, probe_steps=2, recheck_s=100.0)
    used = _run(tuner, {4: 1.0, 1: 3.0}, 20)
    assert used[:5] == [4, 4, 4, 1, 1]  # warm-up, then two probes each
    assert set(used[5:]) == {4}


def test_tuner_drops_to_one_thread_on_a_busy_machine_and_rechecks() -> None:
    tuner = ThreadTuner(max_threads=2, probe_steps=2, recheck_s=10.0)
    used = _run(tuner, {2: 9.4, 1: 2.1}, 12)
    assert used[5:10] == [1, 1, 1, 1, 1]
    # After 10 s on the chosen count a new probe round tries both again.
    assert used[10:12] == [2, 2]
    assert tuner.most_used_threads == 1


def test_tuner_with_one_core_never_probes() -> None:
    tuner = ThreadTuner(max_threads=1)
    assert _run(tuner, {1: 1.0}, 5) == [1] * 5


def test_tuner_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_threads"):
        ThreadTuner(max_threads=0)
