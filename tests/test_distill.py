"""Distilling the face refiner into the cheaper top level: the student starts from the teacher's layers,
training brings it closer to the teacher, and a run checkpoints and resumes."""
from __future__ import annotations

import json

import torch

from enliven.models import generator as gen
from enliven.train import distill
from tests.test_train import synthetic_store


def teacher() -> gen.Refiner:
    torch.manual_seed(1)
    t = gen.create_generator("refiner32-test")
    with torch.no_grad():  # a teacher that does something: its head is not the near-zero initial one
        t.decoder.head.weight.normal_(std=0.2)
        for film in t.decoder.films:
            film.linear.weight.normal_(std=0.1)
    return t.eval()


def test_student_starts_from_the_teachers_layers() -> None:
    t = teacher()
    s = distill.student_from(t)
    assert s.config.top == "shuffle" and s.config.widths == t.config.widths
    mine, theirs = s.state_dict(), t.state_dict()
    shared = [k for k in mine if not k.startswith(tuple("decoder." + p for p in distill.new_layers(s.config)))]
    assert any(k.startswith("decoder.enc.") for k in shared) and any(k.startswith("encoder.") for k in shared)
    for k in shared:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=0)
    assert not any(p.requires_grad for p in s.encoder.parameters())  # the photo's code stays the teacher's
    assert distill.new_layers(gen.GeneratorConfig()) == ("stem.", "up.3.", "films.4.", "head.")


def test_distillation_brings_the_student_to_the_teacher_and_resumes(tmp_path) -> None:
    store = tmp_path / "pairs"
    synthetic_store(store / "train", n=16)
    synthetic_store(store / "dev", n=8, seed=1)
    cfg = distill.DistillConfig(pairs_dir=str(store), run_dir=str(tmp_path / "run"), steps=30, new_layers_steps=10,
                                batch_size=4, lr_new=3e-3, lr_all=1e-3, dev_every=15, dev_pairs=8, threads=1)
    t = teacher()
    before = distill.dev_check(distill.student_from(t), t, distill.PairDataset(store / "dev"), 8)["gap_face_l1"]
    run = distill.run(cfg, teacher=t)
    rows = [json.loads(line) for line in (run / "dev.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [15, 30]
    assert rows[-1]["gap_face_l1"] < 0.5 * before, (before, rows)
    student = gen.load_generator(path=run / "weights_best.pt")
    assert student.config.top == "shuffle"
    # a longer run resumes from the checkpoint instead of starting over
    distill.run(distill.DistillConfig(**{**cfg.__dict__, "steps": 45}), teacher=t)
    rows = [json.loads(line) for line in (run / "dev.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [15, 30, 45]


def test_a_student_carried_to_a_new_teacher_starts_from_its_decoder(tmp_path) -> None:
    """``init``: the student's decoder (new layers too) comes from an earlier student, its encoder from the
    teacher, and training starts past the new-layers phase: the first check is already near the teacher."""
    store = tmp_path / "pairs"
    synthetic_store(store / "train", n=16)
    synthetic_store(store / "dev", n=8, seed=1)
    common = dict(pairs_dir=str(store), new_layers_steps=10, batch_size=4, lr_new=3e-3, lr_all=1e-3,
                  dev_pairs=8, threads=1)
    t = teacher()
    first = distill.run(distill.DistillConfig(run_dir=str(tmp_path / "a"), steps=30, dev_every=15, **common), teacher=t)
    fresh = distill.dev_check(distill.student_from(t), t, distill.PairDataset(store / "dev"), 8)["gap_face_l1"]
    carried = distill.run(distill.DistillConfig(run_dir=str(tmp_path / "b"), steps=12, dev_every=2,
                                                init=str(first / "weights_best.pt"), **common), teacher=t)
    rows = [json.loads(line) for line in (carried / "dev.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [12]  # started at step 10, past phase 1
    assert rows[0]["gap_face_l1"] < 0.5 * fresh, (fresh, rows)
    student = gen.load_generator(path=carried / "weights_best.pt")
    for k, v in t.encoder.state_dict().items():
        torch.testing.assert_close(student.encoder.state_dict()[k], v.half().float(), rtol=0, atol=0)  # saved as fp16
