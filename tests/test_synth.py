"""Synthetic scenes: deterministic, exact ground truth, records every task loads, perfect answers score 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import vgrpo
from vgrpo.data import load_jsonl
from vgrpo.synth import synthesize


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, synthesize(out, n_per_task=24, seed=3)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    out, paths = dataset
    again = synthesize(tmp_path / "again", n_per_task=24, seed=3)
    other = synthesize(tmp_path / "other", n_per_task=24, seed=4)
    for task in paths:
        assert paths[task].read_text() == again[task].read_text()
    assert paths["rec"].read_text() != other["rec"].read_text()
    image = _records(paths["rec"])[0]["image"]
    assert (paths["rec"].parent / image).read_bytes() == (again["rec"].parent / image).read_bytes()


def test_every_record_loads_for_its_task(dataset):
    _, paths = dataset
    registry = vgrpo.get_registry()
    for task, path in paths.items():
        samples = load_jsonl(path, registry.task(task), read_sizes=True)
        assert len(samples) == 24
        if task != "math":
            assert all(s.images and s.image_size == (224.0, 224.0) for s in samples)


def _colour_mask(img, box, pad=3):
    """Pixels that are not background within box + pad (the scenes are shapes on white)."""
    arr = np.asarray(img.convert("RGB")).astype(int)
    x1, y1, x2, y2 = box
    region = arr[max(0, y1 - pad) : y2 + pad, max(0, x1 - pad) : x2 + pad]
    return (region.sum(axis=2) < 3 * 250), (x1 - max(0, x1 - pad), y1 - max(0, y1 - pad))


def test_ovd_boxes_are_tight_around_the_drawn_shapes(dataset):
    _, paths = dataset
    checked = 0
    for rec in _records(paths["ovd"])[:10]:
        img = Image.open(paths["ovd"].parent / rec["image"])
        for obj in rec["solution"]:
            x1, y1, x2, y2 = obj["bbox_2d"]
            mask, (ox, oy) = _colour_mask(img, (x1, y1, x2, y2))
            # the shape's ink touches every side of its box
            inner = mask[oy : oy + (y2 - y1), ox : ox + (x2 - x1)]
            assert inner[:, 0].any() and inner[:, -1].any() and inner[0, :].any() and inner[-1, :].any()
            checked += 1
    assert checked > 5


def test_counts_match_the_ovd_ground_truth_of_the_same_scene(dataset):
    _, paths = dataset
    scenes = {r["image"]: r for r in _records(paths["ovd"])}
    for rec in _records(paths["count"]):
        q = rec["question"].lower()
        assert isinstance(rec["solution"], int) and rec["solution"] >= 0
        if rec["image"] in scenes and q.startswith("how many ") and "shapes" not in q:
            label = q[len("how many ") : q.index(" are there")].rstrip("s")
            listed = scenes[rec["image"]]["question"].lower()
            # "colour kind", asked by the scene's OVD question
            if len(label.split()) == 2 and label in listed:
                n = sum(o["label"] == label for o in scenes[rec["image"]]["solution"])
                assert n == rec["solution"], (rec, scenes[rec["image"]])


def test_perfect_completions_score_full_accuracy(dataset):
    _, paths = dataset
    registry = vgrpo.get_registry()
    answers = {
        "rec": lambda s: json.dumps({"bbox_2d": s.solution}),
        "ovd": lambda s: json.dumps(s.solution),
        "count": lambda s: str(s.solution),
        "math": lambda s: f"\\boxed{{{s.solution}}}",
    }
    for task_name, path in paths.items():
        task = registry.task(task_name)
        samples = load_jsonl(path, task)
        completions = [f"<think>t</think><answer>{answers[task_name](s)}</answer>" for s in samples]
        results = vgrpo.score(task, completions, samples)
        assert all(r.rewards["accuracy"] == pytest.approx(1.0) for r in results), task_name
        assert all(r.rewards["format"] == 1.0 for r in results)


def test_reuse_keeps_a_matching_folder_and_bad_arguments_are_refused(tmp_path):
    first = synthesize(tmp_path / "d", n_per_task=4, seed=1)
    stamp = first["rec"].stat().st_mtime_ns
    assert synthesize(tmp_path / "d", n_per_task=4, seed=1, reuse=True) == first
    assert first["rec"].stat().st_mtime_ns == stamp
    with pytest.raises((vgrpo.VgrpoError, ValueError)):
        synthesize(tmp_path / "e", n_per_task=-1)
    with pytest.raises((vgrpo.VgrpoError, ValueError)):
        synthesize(tmp_path / "e", tasks=["nope"])


# -- exact ground truth, checked against scenes.jsonl and the pixels -----------------------------------------
from vgrpo.synth import COLOURS, SCENES, draw_scene, referring_expressions  # noqa: E402


def _scenes(out):
    return {s["image"]: s for s in _records(out / SCENES)}


def test_every_file_is_byte_identical_for_the_same_seed(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "again"
    synthesize(again, n_per_task=24, seed=3)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_boxes_are_tight_and_no_shape_colour_lies_outside(dataset):
    out, _ = dataset
    for scene in list(_scenes(out).values())[:12]:
        arr = np.asarray(Image.open(out / scene["image"]).convert("RGB"))
        for shape in scene["shapes"]:
            x1, y1, x2, y2 = shape["bbox_2d"]
            mine = (arr == COLOURS[shape["colour"]]).all(axis=2)
            inside = mine[y1:y2, x1:x2]
            assert inside[:, 0].any() and inside[:, -1].any() and inside[0, :].any() and inside[-1, :].any()
            outside = mine.copy()
            outside[y1:y2, x1:x2] = False
            # other shapes of the same colour are the only ink of that colour allowed outside the box
            same_colour = [o for o in scene["shapes"] if o is not shape and o["colour"] == shape["colour"]]
            for ox1, oy1, ox2, oy2 in (o["bbox_2d"] for o in same_colour):
                outside[oy1:oy2, ox1:ox2] = False
            assert not outside.any(), (scene["name"], shape)


def test_count_solutions_equal_the_shapes_of_that_kind(dataset):
    out, paths = dataset
    scenes = _scenes(out)
    zeros = 0
    for rec in _records(paths["count"]):
        words = rec["question"][len("How many ") : -len(" are there?")].split()
        colour = words[0] if words[0] in COLOURS else None
        kind = None if words[-1] == "shapes" else words[-1].rstrip("s")
        shapes = scenes[rec["image"].removeprefix("../")]["shapes"]
        want = sum((colour in (None, s["colour"])) and (kind in (None, s["kind"])) for s in shapes)
        assert rec["solution"] == want, rec
        zeros += want == 0
    assert zeros > 0  # absent categories are asked about too


def test_rec_phrases_name_exactly_one_shape_and_ovd_lists_are_sometimes_empty_or_partial(dataset):
    out, paths = dataset
    scenes = _scenes(out)
    for rec in _records(paths["rec"]):
        shapes = scenes[rec["image"].removeprefix("../")]["shapes"]
        assert sum(s["bbox_2d"] == rec["solution"] for s in shapes) == 1
        label = next(s["label"] for s in shapes if s["bbox_2d"] == rec["solution"])
        assert label in rec["question"]
    empty = partial = 0
    for rec in _records(paths["ovd"]):
        shapes = scenes[rec["image"].removeprefix("../")]["shapes"]
        asked = sorted((s["label"], s["bbox_2d"]) for s in shapes if s["label"] in rec["question"])
        assert asked == sorted((d["label"], d["bbox_2d"]) for d in rec["solution"])
        empty += rec["solution"] == []
        partial += 0 < len(rec["solution"]) < len(shapes)
    assert empty > 0 and partial > 0


def test_a_phrase_for_two_shapes_of_one_label_says_which():
    for index in range(40):
        _, scene = draw_scene(0, "train", index)
        for i, phrase in referring_expressions(scene):
            same = [s for s in scene.shapes if s.label == scene.shapes[i].label]
            assert (phrase == f"the {scene.shapes[i].label}") == (len(same) == 1)


def test_math_records_are_text_only_and_a_changed_setting_is_not_reused(tmp_path):
    paths = synthesize(tmp_path / "d", n_per_task=6, tasks=["math"], seed=2)
    for rec in _records(paths["math"]):
        a, op, b = rec["question"].removeprefix("What is ").removesuffix("?").split()
        result = {"+": int(a) + int(b), "-": int(a) - int(b), "×": int(a) * int(b)}[op]
        assert "image" not in rec and rec["solution"] == str(result)
    assert not (tmp_path / "d" / "images").exists()
    bigger = synthesize(tmp_path / "d", n_per_task=8, tasks=["math"], seed=2, reuse=True)
    assert len(_records(bigger["math"])) == 8


# -- tasks make the records: built-ins and third parties alike -----------------------------------------------
import random  # noqa: E402

from vgrpo.synth import SynthItem, synth_tasks  # noqa: E402

COLOUR_TASK = '''
import vgrpo

@vgrpo.reward(range=(0.0, 1.0))
def accuracy(parsed, sample):
    """1.0 when the answer is the colour."""
    return 1.0 if parsed == sample.solution else 0.0

class Colour(vgrpo.Task):
    name = "acme.colour"
    description = "Name the colour of the largest shape."
    template = vgrpo.PromptTemplate(user="{question}")
    rewards = (accuracy, vgrpo.format_reward)
    metric_names = ("accuracy",)
    example = {"id": "c", "question": "Which colour?", "solution": "red"}
    example_completion = "<think>.</think><answer>red</answer>"

    def parse(self, completion, params):
        return vgrpo.extract_answer(completion)

    def metric(self, predictions, samples, params):
        return {"accuracy": sum(p == s.solution for p, s in zip(predictions, samples)) / max(len(samples), 1)}

    def synth_record(self, item):
        scene = item.scene
        area = lambda s: (s.box[2] - s.box[0]) * (s.box[3] - s.box[1])
        big = max(scene.shapes, key=lambda s: (area(s), item.rng.random()))
        print("plugin chatter")  # never reaches vgrpo's stdout
        question = "Which colour is the largest shape?"
        return {"id": f"colour-{item.name}", "image": item.image, "question": question,
                "solution": big.colour}

@vgrpo.hookimpl
def vgrpo_tasks():
    return [Colour()]
'''


def test_a_third_party_task_makes_records_from_the_shared_scenes_and_changes_no_other_file(
    fake_site, tmp_path, capsys
):
    fake_site.add("acme-colour", source=COLOUR_TASK)
    registry = vgrpo.load_plugins()
    assert set(synth_tasks(registry)) == {"acme.colour", "count", "math", "ovd", "rec"}
    tasks = ["count", "acme.colour"]
    paths = synthesize(tmp_path / "d", n_per_task=6, tasks=tasks, seed=5, registry=registry)
    assert "plugin chatter" not in capsys.readouterr().out
    colour, count = _records(paths["acme.colour"]), _records(paths["count"])
    assert [r["image"] for r in colour] == [r["image"] for r in count]  # one image per scene, shared
    scenes = _scenes(tmp_path / "d")
    for rec in colour:
        shapes = scenes[rec["image"].removeprefix("../")]["shapes"]
        areas = [(s["bbox_2d"][2] - s["bbox_2d"][0]) * (s["bbox_2d"][3] - s["bbox_2d"][1]) for s in shapes]
        assert rec["solution"] in {s["colour"] for s, a in zip(shapes, areas) if a == max(areas)}
    samples = load_jsonl(paths["acme.colour"], registry.task("acme.colour"), read_sizes=True)
    assert len(samples) == 6 and all(s.images for s in samples)
    alone = synthesize(tmp_path / "e", n_per_task=6, tasks=["count"], seed=5)
    assert alone["count"].read_bytes() == paths["count"].read_bytes()
    everything = synthesize(tmp_path / "f", n_per_task=1, n_val=0, registry=registry)
    assert list(everything) == ["acme.colour", "count", "math", "ovd", "rec"]  # the default: every such task


def test_a_task_without_synth_record_is_refused_and_one_returning_no_record_is_named(fake_site, tmp_path):
    fake_site.task_plugin("acme-echo", "acme.echo")
    method = "    def synth_record(self, item):\n"
    bad = COLOUR_TASK.replace("acme.colour", "acme.bad")
    bad = bad.replace(method, method + "        return [item.name]\n")
    fake_site.add("acme-bad", source=bad)
    registry = vgrpo.load_plugins()
    assert "acme.echo" not in synth_tasks(registry)
    refused = r"tasks: expected some of .*'acme.bad'.*, got \['acme.echo'\]"
    with pytest.raises(vgrpo.ParamsError, match=refused):
        synthesize(tmp_path / "d", n_per_task=2, tasks=["acme.echo"], registry=registry)
    named = "task 'acme.bad': synth_record returned list for train item 0; expected a JSONL record"
    with pytest.raises(vgrpo.PluginError, match=named):
        synthesize(tmp_path / "d", n_per_task=2, tasks=["acme.bad"], registry=registry)


def test_the_optional_task_methods_default_to_nothing(fake_site):
    fake_site.task_plugin("acme-echo", "acme.echo")
    task = vgrpo.load_plugins().task("acme.echo")
    assert task.step_stats("hi") == {}
    assert task.synth_record(SynthItem("train", 0, random.Random(0), lambda: 1 / 0)) is None


def test_cli_data_synth_writes_the_tasks_asked_for(tmp_path, capsys):
    from vgrpo import cli

    assert cli.main(["data", "synth", str(tmp_path / "d"), "--n", "3", "--tasks", "math,count"]) == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir() if p.is_dir()) == ["count", "images", "math"]
    assert len(_records(tmp_path / "d" / "math" / "train.jsonl")) == 3
    assert cli.main(["data", "synth", str(tmp_path / "e"), "--tasks", "nope"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: tasks: expected some of the tasks that make synthetic data")
