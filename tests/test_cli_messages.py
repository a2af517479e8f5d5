"""Golden tests of ``pnode_zoo.cli.messages``: one per message shape it rewrites.

Each input is the text of a jsonargparse ArgumentError as jsonargparse 4.53 raised it for the
command in the comment (copied from real runs); the expected sentence is written out by hand.
test_cli.py runs the same mistakes end to end, so a jsonargparse that words its errors
differently fails there.
"""

from __future__ import annotations

import pytest

from pnode_zoo.cli.inputs import LINKED
from pnode_zoo.cli.messages import explain_argument_error

FIT_OPTIONS = ["--trainer.max_epochs", "--trainer.min_epochs", "--data.batch_size", "--ckpt_path"]


def class_option_error(key: str, base: str, class_path: str, problem: list[str], option: str,
                       value: str) -> str:
    """jsonargparse's error for ``--KEY.OPTION=VALUE`` that the class at ``key`` (a union of
    ``base`` and None), ``class_path``, rejects with the lines ``problem``."""
    problem_text = "\n        ".join(problem)
    return f"""Parser key "{key}":
  Does not validate against any of the Union subtypes
  Subtypes: [<class '{base}'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path '{class_path}':
        {problem_text}
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='{option}', val='{value}')"""


def test_an_unknown_option_names_the_close_one():
    # fit --trainer.max_epoch=1
    assert explain_argument_error("unrecognized arguments: --trainer.max_epoch=1", FIT_OPTIONS) == (
        "unknown option --trainer.max_epoch (did you mean --trainer.max_epochs?)")


def test_an_unknown_option_far_from_every_other_gets_no_suggestion():
    # fit --no_such_key=1
    assert explain_argument_error("unrecognized arguments: --no_such_key=1", FIT_OPTIONS) == (
        "unknown option --no_such_key")


def test_an_extra_positional_argument_is_unexpected():
    # models resnet odenet
    assert explain_argument_error("unrecognized arguments: odenet", []) == (
        "unexpected argument 'odenet'")


def test_an_unknown_key_in_a_config_group():
    # fit --config typo.yaml, typo.yaml: `trainer: {max_epoch: 3}`
    message = "Group 'trainer' does not accept option 'max_epoch'"
    assert explain_argument_error(message, FIT_OPTIONS) == (
        "unknown option --trainer.max_epoch in the config (did you mean --trainer.max_epochs?)")


def test_an_unknown_top_level_key_in_a_config():
    # fit --config top.yaml, top.yaml: `foo: 1`
    assert explain_argument_error("Option 'foo' is not accepted", FIT_OPTIONS) == (
        "unknown option --foo in the config")


def test_an_unknown_subcommand_names_the_close_one():
    # tset
    message = ("argument subcommand: invalid choice: 'tset' (choose from 'fit', 'validate', "
               "'test', 'predict', 'models', 'pretrained', 'export', 'dashboard')")
    assert explain_argument_error(message, []) == (
        "unknown subcommand 'tset' (did you mean test?)")


@pytest.mark.parametrize(
    ("message", "options", "expected"),
    [("the following arguments are required: dashboard.entity", ["--entity", "--project"],
      "--entity is required"),
     ("the following arguments are required: export.ckpt, export.dir", ["--name"],
      "CKPT and DIR are required")],
    ids=["option", "positionals"])
def test_a_missing_argument_is_named_as_the_user_writes_it(message, options, expected):
    # dashboard; export
    assert explain_argument_error(message, options) == expected


def test_an_option_the_chosen_class_lacks_lists_its_options():
    # fit --model.lrr=0.1
    message = class_option_error("model", "pytorch_lightning.core.module.LightningModule",
                                 "pnode_zoo.tasks.Classifier", ["Option 'lrr' is not accepted"],
                                 "lrr", "0.1")
    assert explain_argument_error(message, FIT_OPTIONS, LINKED) == (
        "unknown option --model.lrr: Classifier has no option 'lrr' (did you mean lr?); its "
        "options: arch, arch_args, pretrained, lr, weight_decay, warmup_epochs, label_smoothing")


def test_an_unknown_class_name_lists_the_known_ones():
    # fit --model=Classifer
    message = """Parser key "model":

  - Expected a path but Classifer either not accessible or invalid
  - Does not validate against any of the Union subtypes
  Subtypes: [<class 'pytorch_lightning.core.module.LightningModule'>, <class 'NoneType'>]
  Errors:
    - Expected a dot import path string: Classifer
    - Expected a <class 'NoneType'>
  Given value type: <class 'str'>
  Given value: Classifer"""
    explained = explain_argument_error(message, FIT_OPTIONS)
    assert explained.startswith("--model: no class named 'Classifer' (did you mean Classifier?); "
                                "known: ")
    known = explained.split("known: ")[1].split(", ")
    assert "Classifier" in known and "Task" not in known  # an abstract base is no choice


def test_options_of_a_class_given_by_registered_name_need_its_class_name():
    # fit --trainer.strategy=time_parallel --trainer.strategy.timeout=60
    message = """Parser key "trainer.strategy":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'str'>, <class 'pytorch_lightning.strategies.strategy.Strategy'>]
  Errors:
    - Expected a <class 'str'>
    - Expected a dot import path string: time_parallel
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='timeout', val='60')"""
    assert explain_argument_error(message, FIT_OPTIONS) == (
        "--trainer.strategy.timeout: options of --trainer.strategy need its class name, not "
        "'time_parallel' (e.g. --trainer.strategy=TimeParallelStrategy)")


def test_a_wrong_type_in_a_class_option_names_the_type_and_the_value():
    # fit --data.batch_size=abc
    message = class_option_error(
        "data", "pytorch_lightning.core.datamodule.LightningDataModule",
        "pnode_zoo.data.DigitsDataModule",
        ['Parser key "batch_size":', "  Expected a <class 'int'>. Got value: abc"],
        "batch_size", "abc")
    assert explain_argument_error(message, FIT_OPTIONS) == (
        "--data.batch_size: expected int, got abc")


def test_a_wrong_type_in_a_union_lists_every_member_and_null():
    # fit --trainer.limit_val_batches=abc
    message = """Parser key "trainer.limit_val_batches":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'int'>, <class 'float'>, <class 'NoneType'>]
  Errors:
    - Expected a <class 'int'>
    - Expected a <class 'float'>
    - Expected a <class 'NoneType'>
  Given value type: <class 'str'>
  Given value: abc"""
    assert explain_argument_error(message, FIT_OPTIONS) == (
        "--trainer.limit_val_batches: expected int or float or null, got abc")


def test_a_value_outside_literals_lists_the_accepted_ones_once():
    # fit --trainer.precision=99
    message = """Parser key "trainer.precision":
  Does not validate against any of the Union subtypes
  Subtypes: [typing.Literal[64, 32, 16], typing.Literal['64', '32'], <class 'NoneType'>]
  Errors:
    - Expected a typing.Literal[64, 32, 16]
    - Expected a typing.Literal['64', '32', '16-mixed']
    - Expected a <class 'NoneType'>
  Given value type: <class 'str'>
  Given value: 99"""
    assert explain_argument_error(message, FIT_OPTIONS) == (
        "--trainer.precision: expected one of 64, 32, 16, '64', '32', '16-mixed' or null, got 99")


def test_a_message_of_no_known_shape_keeps_its_first_line():
    message = "Something jsonargparse has not said before\n  with details"
    assert explain_argument_error(message, FIT_OPTIONS) == (
        "Something jsonargparse has not said before")
