"""The ``deepguard`` CLI: JSON schema, formats, folder runs that survive bad files, usage errors, info."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deepguard.cli import main

REQUIRED = {"path", "kind", "verdict", "score", "faces", "frames", "model", "error"}


def _jsonl(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_detect_jsonl_schema(t1_jpg: Path, capsys) -> None:
    assert main(["detect", str(t1_jpg), "--format", "jsonl"]) == 0
    (rec,) = _jsonl(capsys)
    assert REQUIRED <= set(rec)
    assert rec["kind"] == "image" and rec["verdict"] in ("real", "uncertain", "fake") and rec["error"] is None
    assert isinstance(rec["score"], float) and 0 <= rec["score"] <= 1
    assert len(rec["faces"]) == 6
    face = rec["faces"][0]
    assert {"box", "score", "frame", "time", "keypoints", "det_score"} <= set(face)


def test_folder_run_survives_bad_files(t1_jpg: Path, face_video: Path, tmp_path: Path, capsys) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(t1_jpg, d / "a.jpg")
    shutil.copy(face_video, d / "sub" / "c.mp4")
    (d / "b.png").write_bytes(b"")
    (d / "notes.txt").write_text("ignored: not media")
    plots = tmp_path / "plots"
    assert main(["detect", str(d), "--format", "jsonl", "--plot", str(plots)]) == 0
    recs = {Path(r["path"]).name: r for r in _jsonl(capsys)}
    assert set(recs) == {"a.jpg", "b.png", "c.mp4"}
    assert recs["b.png"]["verdict"] == "error" and "empty" in recs["b.png"]["error"]
    assert recs["c.mp4"]["kind"] == "video" and len(recs["c.mp4"]["frames"]) == 3
    assert (plots / "c.scores.png").stat().st_size > 1000


def test_csv_and_table(t1_jpg: Path, capsys) -> None:
    assert main(["detect", str(t1_jpg), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("path,kind,verdict,score") and len(lines) == 2
    assert main(["detect", str(t1_jpg)]) == 0
    out = capsys.readouterr().out
    assert "VERDICT" in out and "6 face(s)" in out


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["detect"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["detect", "x.jpg", "--format", "xml"])
    assert e.value.code == 2
    assert main(["detect", "x.jpg", "--model", "/nonexistent/model.onnx"]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_info_shows_metadata(capsys) -> None:
    assert main(["info", "--json"]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert {Path(i["path"]).name for i in infos} >= {"deepguard-edge-fp32.onnx", "deepguard-edge-int8.onnx"}
    for i in infos:
        assert i["input_layout"] == "NHWC" and i["color_order"] == "RGB"
        # the shipped metrics.json is read back per precision
        m = json.loads((Path(i["path"]).parent / "metrics.json").read_text())
        assert [x["name"] for x in i["members"]] == list(m["weights"])  # the members it was trained with
        assert 0 < float(i["threshold"]) < 1 and "DFDC" in i["training_data"]
        prec = "int8" if "int8" in Path(i["path"]).name else "fp32"
        assert i["val_roc_auc"] == round(m["val"][prec]["roc_auc"], 4)


def test_info_without_metrics_file_still_works(tmp_path: Path, capsys) -> None:
    import shutil

    from deepguard.runtime.classify import DEFAULT_DIR

    model = shutil.copy(DEFAULT_DIR / "deepguard-edge-int8.onnx", tmp_path / "m-int8.onnx")
    assert main(["info", "--json", "--model", str(model)]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert "val_roc_auc" not in info
    (tmp_path / "metrics.json").write_text(
        json.dumps(
            {
                "val": {"int8": {"roc_auc": 0.5, "accuracy": 0.5}},
                "robustness": [{"condition": "jpeg:50", "roc_auc": 0.45}],
                "self_blend_probe": {"auc": 0.7},
            }
        )
    )
    assert main(["info", "--json", "--model", str(model)]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["val_roc_auc"] == 0.5 and info["val_auc_under"] == {"jpeg:50": 0.45}
    assert info["self_blend_probe_auc"] == 0.7


def test_evaluate_prints_metrics_and_roc(astronaut, tmp_path: Path, capsys) -> None:
    import cv2

    for label in ("real", "fake"):
        (tmp_path / "set" / label).mkdir(parents=True)
    for i in range(4):
        crop = cv2.cvtColor(astronaut[10 + 10 * i : 230 + 10 * i, 140:340], cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(tmp_path / "set" / ("real" if i % 2 else "fake") / f"v{i}_0.jpg"), crop)
    roc = tmp_path / "roc.png"
    js = tmp_path / "m.json"
    assert (
        main(["evaluate", str(tmp_path / "set"), "--face-crops", "--roc", str(roc), "--json", str(js)]) == 0
    )
    out = capsys.readouterr().out
    assert "roc_auc" in out.replace("auc", "roc_auc") and "frame" in out and "video" in out
    m = json.loads(js.read_text())["levels"]["frame"]
    assert m["n"] == 4 and m["n_pos"] == 2
    assert roc.stat().st_size > 1000


def test_train_schedule_flag_reaches_config(monkeypatch, tmp_path) -> None:
    """`deepguard train --schedule cosine` trains with the cosine schedule; an unknown schedule is a usage error."""
    import deepguard.training.data as data
    import deepguard.training.train as train

    seen = {}

    def fake_train(
        tr, va, out, cfg, *a, **k
    ):  # records the config only: the fit itself is tested in test_training
        seen["cfg"] = cfg
        return {"val_auc": 0.5, "train_seconds": 0.0, "keras": str(tmp_path / "m.keras")}

    monkeypatch.setattr(data, "load_crops", lambda *a, **k: None)
    monkeypatch.setattr(train, "train_member", fake_train)
    main(
        [
            "train",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--schedule",
            "cosine",
            "--lr",
            "5e-4",
        ]
    )
    assert seen["cfg"].schedule == "cosine" and seen["cfg"].lr == 5e-4
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--schedule", "linear"])
