"""Latency harness: statistics on known samples, MAC counting on a hand-counted graph, result
schema round trip, merging devices, report rendering, a real (tiny) bench and the CLI.
No timing assertions: speed targets belong in reports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.latency.floor import attach_floor, count_macs
from benchmarks.latency.harness import RESULT_SCHEMA_VERSION, BenchConfig, bench_model, run_isolated
from benchmarks.latency.pipeline import bench_gallery, random_gallery, top2
from benchmarks.latency.report import render_markdown, write_report
from benchmarks.latency.results import RunResults, combine_rounds, merge
from benchmarks.latency.stats import percentile, summarize
from benchmarks.latency.system import cpu_info, model_size_bytes
from conftest import REPO
from edge.card import InputSpec, ModelCard, card_path, sha256_file
from edge.errors import ConfigError

# Conv 3->8 3x3 stride 2 on 16x16 -> 8x8: 8*8*8 outputs * 27 = 13824
# depthwise 3x3 on 8 channels 8x8: 512 outputs * 9 = 4608;  Gemm 8 -> 4: 32
TINY_MACS = 13824 + 4608 + 32


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A carded 16x16 -> 4-d ONNX model built with onnx.helper, dynamic batch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (8, 3, 3, 3)), ("w2", (8, 1, 3, 3)), ("fc", (4, 8)), ("fcb", (4,)))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, str(path))
    ModelCard(name="tiny", architecture="two convs and a linear layer", file=path.name,
              sha256=sha256_file(path), format="onnx", precision="fp32", embedding_size=4,
              input=InputSpec(size=(16, 16), color="bgr", layout="nchw", mean=(0.0,) * 3,
                              std=(255.0,) * 3)).save(card_path(path))
    return path


def _fake_record(name="tiny", runtime="onnxruntime", threads=1, median=2.0):
    stats = summarize([median - 0.5, median, median + 0.5]).to_dict()
    return {"schema_version": RESULT_SCHEMA_VERSION, "kind": "model", "threads": threads, "batch": 1,
            "model": {"name": name, "format": "onnx", "precision": "fp32", "size_bytes": 2**20,
                      "macs": 10**9}, "runtime": {"name": runtime}, "stats": stats,
            "load_ms": 12.0, "peak_rss_mb": 80.0, "floor": None, "cpu_per_wall": 0.98}


class TestStats:
    def test_known_samples(self):
        samples = [10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]  # unsorted on purpose
        s = summarize(samples, items_per_call=8)
        assert (s.n, s.min_ms, s.max_ms) == (10, 1.0, 10.0)
        assert s.median_ms == pytest.approx(5.5)
        assert s.p90_ms == pytest.approx(9.1)  # rank 8.1 between 9 and 10
        assert s.p99_ms == pytest.approx(9.91)
        assert s.mean_ms == pytest.approx(5.5)
        assert s.std_ms == pytest.approx(np.std(samples, ddof=1))
        assert s.throughput == pytest.approx(8 * 1000 / 5.5)

    def test_percentile_matches_numpy(self, rng):
        values = sorted(rng.exponential(3.0, 101))
        for q in (0, 12.5, 50, 90, 99, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q))

    def test_single_sample_and_errors(self):
        s = summarize([4.0])
        assert s.median_ms == s.p99_ms == 4.0 and s.std_ms == 0.0
        with pytest.raises(ConfigError):
            summarize([])
        with pytest.raises(ConfigError):
            percentile([1.0], 101)


class TestFloor:
    def test_onnx_macs_hand_counted(self, tiny_model):
        assert count_macs(tiny_model) == TINY_MACS

    def test_openvino_ir_macs_agree(self, tiny_model, tmp_path):
        ov = pytest.importorskip("openvino")
        xml = tmp_path / "tiny.xml"
        ov.save_model(ov.convert_model(str(tiny_model)), str(xml))
        assert count_macs(xml) == TINY_MACS
        assert model_size_bytes(xml) > xml.stat().st_size  # the .bin counts

    def test_attach_floor(self):
        record = _fake_record(median=20.0)
        attach_floor(record, {"1": {"fp32": 100.0, "int8": 200.0}})
        assert record["floor"]["floor_ms"] == pytest.approx(10.0)  # 1e9 MACs / 100 GMAC/s
        assert record["floor"]["x_of_floor"] == pytest.approx(2.0)
        record["threads"] = 4  # not calibrated: no floor rather than a wrong one
        attach_floor(record, {"1": {"fp32": 100.0, "int8": 200.0}})
        assert record["floor"] is None


class TestHarness:
    def test_bench_tiny_model_threads_apply(self, tiny_model):
        records = {t: bench_model(BenchConfig(str(tiny_model), "onnxruntime", threads=t, batch=2,
                                              warmup=2, iters=5, min_seconds=0)) for t in (1, 2)}
        for threads, rec in records.items():
            assert rec["schema_version"] == RESULT_SCHEMA_VERSION and rec["kind"] == "model"
            assert rec["threads_effective"] == threads
            assert rec["model"]["card_sha256"] == sha256_file(tiny_model)
            assert rec["stats"]["n"] >= 5 and rec["stats"]["items_per_call"] == 2
            assert rec["system"]["cpu"]["logical_cores"] >= 1
        json.dumps(records)  # JSON-able

    def test_openvino_threads_read_back(self, tiny_model):
        pytest.importorskip("openvino")
        for threads in (1, 2):
            rec = bench_model(BenchConfig(str(tiny_model), "openvino", threads=threads, warmup=1,
                                          iters=3, min_seconds=0))
            assert rec["threads_effective"] == threads

    def test_isolated_run(self, tiny_model):
        rec = run_isolated(BenchConfig(str(tiny_model), "onnxruntime", warmup=1, iters=3, min_seconds=0))
        assert rec["model"]["name"] == "tiny" and rec["peak_rss_mb"] > 0

    def test_bad_config_is_a_config_error(self):
        with pytest.raises(ConfigError, match="threads"):
            BenchConfig("tiny", threads=0)


class TestResults:
    def test_round_trip(self, tmp_path):
        run = RunResults(device="box", system={"cpu": {"model": "x"}}, models=[_fake_record()])
        loaded = RunResults.load(run.save(tmp_path / "r.json"))
        assert loaded.to_dict() == run.to_dict()

    def test_rejects_other_versions(self, tmp_path):
        raw = RunResults(device="box").to_dict() | {"schema_version": 99}
        with pytest.raises(ConfigError, match="schema version"):
            RunResults.from_dict(raw)
        with pytest.raises(ConfigError, match="not a MaskEdge"):
            RunResults.from_dict({"models": []})

    def test_merge_two_files_by_device(self, tmp_path):
        a = RunResults(device="x86", models=[_fake_record("sface")]).save(tmp_path / "a.json")
        b = RunResults(device="jetson", models=[_fake_record("sface", median=9.0)]).save(tmp_path / "b.json")
        c = RunResults(device="x86", models=[_fake_record("mfn")]).save(tmp_path / "c.json")
        merged = merge([RunResults.load(p) for p in (a, b, c)])
        assert list(merged) == ["x86", "jetson"]
        assert [r["model"]["name"] for r in merged["x86"].models] == ["sface", "mfn"]


class TestRounds:
    def test_median_round_is_kept_with_every_rounds_median(self):
        records = [_fake_record("m", median=ms) for ms in (3.0, 9.0, 4.0)]
        combined = combine_rounds(records)
        assert combined["stats"]["median_ms"] == 4.0  # a measured round, not an average
        assert combined["rounds"] == {"count": 3, "median_ms": [3.0, 9.0, 4.0]}
        assert combine_rounds(records[:2])["stats"]["median_ms"] == 3.0  # even: the lower middle
        with pytest.raises(ValueError):
            combine_rounds([])

    def test_report_shows_the_range_only_for_rounds(self):
        rec = _fake_record("m") | {"rounds": {"count": 3, "median_ms": [2.5, 2.0, 2.25]}}
        text = render_markdown({"box": RunResults(device="box", models=[rec])})
        assert "rounds: min-max ms |" in text and "| 3: 2.00-2.50 |" in text
        assert "rounds: min-max ms |" not in render_markdown({"box": RunResults(device="box",
                                                                                models=[_fake_record()])})


class TestReport:
    def test_markdown_and_png(self, tmp_path):
        run = RunResults(device="box", models=[_fake_record("sface", threads=t) for t in (1, 2)]
                         + [_fake_record("mfn", "tflite")])
        run.gallery = bench_gallery((100, 1000), queries=3, min_seconds=0)
        text = render_markdown({"box": run, "pi": RunResults(device="pi", models=[_fake_record()])})
        assert "## box" in text and "## pi" in text
        assert "| sface | onnx | fp32 | onnxruntime | 2 | 1 | 2.00 |" in text and "| 0.98 |" in text
        assert "| mfn | onnx | fp32 | tflite | 1 |" in text and "| 1,000 | 128 |" in text
        md, png = write_report({"box": run}, tmp_path)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![latency](latency.png)" in md.read_text()


class TestGallery:
    def test_top2_and_memory(self):
        gallery = random_gallery(1000, 128)
        np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-5)
        assert list(top2(gallery, gallery[17])[:1]) == [17]
        rec = bench_gallery((1000,), queries=2, min_seconds=0)[0]
        assert rec["memory_mb"] == pytest.approx(1000 * 128 * 4 / 2**20)


def test_system_info_flags_and_no_torch(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: Test CPU\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    info = cpu_info(fake)
    assert info["model"] == "Test CPU" and info["flags"]["avx2"] and not info["flags"]["avx512f"]
    code = ("import sys, benchmarks.latency as b; b.system_info(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_cli_bench_tiny_model(tiny_model, tmp_path):
    import typer

    from cli.bench import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands keep `bench` a named sub-command
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["bench", "--models", str(tiny_model), "--threads", "1",
                                      "--iters", "3", "--warmup", "1", "--min-seconds", "0",
                                      "--no-isolate", "--rounds", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| tiny | onnx | fp32 | onnxruntime | 1 | 1 |" in result.output
    run = RunResults.load(out / "results.json")
    assert len(run.models) == 1 and run.models[0]["rounds"]["count"] == 2
    assert run.models[0]["model"]["macs"] == TINY_MACS and run.models[0]["floor"]["x_of_floor"] > 0
    merged = CliRunner().invoke(app, ["bench", "--report-only", "--merge", str(out / "results.json"),
                                      "--out", str(tmp_path / "again")])
    assert merged.exit_code == 0, merged.output
    assert (tmp_path / "again" / "latency.png").is_file()


@pytest.mark.realdata
@pytest.mark.slow
def test_door_pipeline_on_lfw_clip(data_root, tmp_path):
    from benchmarks.latency.pipeline import STAGES, bench_pipeline
    from benchmarks.latency.video import make_door_clip

    clip = make_door_clip(tmp_path / "door.avi", people=3)
    assert len(clip.truth) == 6 and len(clip.enrol) == 3
    rec = bench_pipeline(clip, "sface", threads=1, warmup=1)
    assert rec["video"]["frames"] == 6 and set(rec["stages"]) == set(STAGES)
    assert rec["faces_found"] >= 5 and rec["top1_correct"] >= 4 and rec["fps"] > 0


@pytest.mark.realdata
def test_tflite_and_openvino_macs_agree(data_root):
    from edge.zoo import resolve_model

    tflite = count_macs(resolve_model("mobilefacenet-tflite"))
    assert type(tflite) is int and tflite == count_macs(resolve_model("mobilefacenet-openvino")) > 1e8


@pytest.mark.realdata
@pytest.mark.slow
def test_door_station_soak_loops_the_clip(data_root, tmp_path):
    from benchmarks.latency.door import bench_door
    from benchmarks.latency.video import make_door_clip

    clip = make_door_clip(tmp_path / "door.avi", people=3)
    # 15 frames of a 6-frame clip: it is reopened twice; every face is someone enrolled.
    rec = bench_door(clip, "mobilefacenet-tflite", threads=1, frames=15, sample_every=5, warmup=2,
                     progress=False)
    assert rec["kind"] == "door" and rec["enrolled"] == 3 and rec["frames"] == 15
    assert rec["decisions"] >= 14 and rec["correct"] >= 13 and rec["decisions_per_s"] > 0
    assert [f for f, _ in rec["memory"]["samples"]] == [0, 5, 10, 15]
    assert rec["memory"]["flat"] in (True, False)  # /proc is there on Linux
    run = RunResults(device="box", door=[rec])
    text = render_markdown(merge([RunResults.load(run.save(tmp_path / "r.json"))]))
    assert "### Door station soak" in text and "| mobilefacenet-tflite |" in text
    md, _ = write_report({"box": run}, tmp_path / "report")
    assert (tmp_path / "report" / "latency_door_memory.png").is_file()
    assert "latency_door_memory.png" in md.read_text()


def test_memory_slope():
    from benchmarks.latency.door import memory_slope

    assert memory_slope([(0, 100.0), (1000, 101.0), (2000, 102.0)]) == pytest.approx(1.0)
    assert memory_slope([(0, 100.0), (1000, 100.0), (2000, None), (3000, 100.0)]) == pytest.approx(0.0)
    assert memory_slope([(0, None), (1000, 100.0)]) is None
