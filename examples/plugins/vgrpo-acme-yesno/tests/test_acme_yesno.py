import vgrpo
from acme_yesno import YesNoTask
from vgrpo.testing import check_task


def test_plugin_is_installed_and_registered():
    registry = vgrpo.load_plugins()
    assert registry.task("acme.yesno").name == "acme.yesno"
    assert registry.owner("task", "acme.yesno")[0] == "vgrpo-acme-yesno"
    assert "acme.brevity" in registry.rewards


def test_yes_no_parsing_and_reward():
    task = YesNoTask()
    sample = vgrpo.Sample(id="1", solution="no")
    out = vgrpo.score(
        task, ["<think>t</think><answer>No, it is a dog.</answer>", "<answer>yes</answer>"], [sample] * 2
    )
    assert [s.parsed for s in out] == ["no", "yes"]
    assert [s.rewards["accuracy"] for s in out] == [1.0, 0.0]


def test_honours_the_vgrpo_contract():
    dog = {"id": "yn-1", "image": "room.png", "question": "Is there a dog?", "solution": "no"}
    check_task(YesNoTask(), examples=[(dog, "<think>Only a cat.</think><answer>No</answer>")])
