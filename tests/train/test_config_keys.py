"""Every key the code reads is declared in its group's yaml, and the build runs in struct mode, so
that reading a key no yaml declares fails instead of answering a silent default."""
from pathlib import Path

import pytest
import torch
from helpers import train_cfg
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError

import genexp
from genexp.data.dataset import Dataset
from genexp.runs.config_keys import ADDED_KEYS, MOVED_TARGETS, as_today
from genexp.train.build import build_dataset, build_model, build_optimizer, declared

CONFIGS = Path(genexp.__file__).parent / "configs"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_reading_an_undeclared_key_fails():
    """`declared` (called by setup.prepare and setup.setup_run) keeps the config in struct mode."""
    cfg = declared(train_cfg("optim.schedule=step"))
    assert OmegaConf.is_struct(cfg)
    with pytest.raises(ConfigAttributeError):
        cfg.optim.decay_rat  # a misspelt key is an error, not None
    with pytest.raises(ConfigAttributeError):
        cfg.optim.decay_rat = 0.5  # nor can a step add one
    # The build reads its keys directly (no get() default): a config without one fails.
    with open_dict(cfg):
        del cfg.optim.warmup_steps
    with pytest.raises(ConfigAttributeError, match="warmup_steps"):
        build_optimizer(cfg, torch.nn.Linear(2, 2))


def test_a_text_dataset_without_max_features_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "".join(f"good film {i},1\nbad film {i},0\n" for i in range(10)))
    cfg = train_cfg("dataset=text", f"dataset.path={path}")
    assert build_dataset(cfg).x_train.shape[1] > 0  # TF-IDF with the declared max_features
    with open_dict(cfg):
        del cfg.dataset.max_features
    with pytest.raises(ConfigAttributeError, match="max_features"):
        build_dataset(cfg)


@pytest.mark.parametrize("key", sorted(ADDED_KEYS))
def test_every_option_of_a_group_declares_the_keys_added_for_old_runs(key):
    """ADDED_KEYS fills in only what run dirs recorded before the key existed: every yaml shipped
    declares the key itself, with the same default (presets may change it)."""
    group, leaf = key.split(".")
    for option in _options(group):
        node = OmegaConf.load(CONFIGS / group / f"{option}.yaml")
        assert leaf in node, f"configs/{group}/{option}.yaml does not declare {leaf}"
        if not OmegaConf.is_dict(node[leaf]):  # a text model's own text_encoder is a node
            assert node[leaf] == ADDED_KEYS[key], f"configs/{group}/{option}.yaml: {leaf}={node[leaf]}"


def test_a_run_recorded_before_the_added_keys_builds_with_their_old_defaults():
    from genexp.train.checkpoint import run_id

    cfg = train_cfg("optim.schedule=step")
    recorded = OmegaConf.to_container(cfg, resolve=True)
    for key in ADDED_KEYS:
        group, leaf = key.split(".")
        del recorded[group][leaf]
    old = OmegaConf.create(recorded)  # as OmegaConf.load reads a run dir's config.yaml: not in struct mode
    name = run_id(old)
    built = declared(old)
    assert OmegaConf.is_struct(old) and OmegaConf.is_struct(built)
    assert {key: OmegaConf.select(built, key) for key in ADDED_KEYS} == ADDED_KEYS
    assert OmegaConf.to_container(built) == OmegaConf.to_container(cfg, resolve=True)
    # The run's own config is left as recorded: its checkpoints still name it.
    assert "freeze" not in old.model and run_id(old) == name
    _, schedule = build_optimizer(old, torch.nn.Linear(2, 2))
    factor = schedule.lr_lambdas[0]  # schedule=step, no decay_steps: x decay_rate (0.1) every `steps` steps
    assert (factor(0), factor(old.steps - 1), factor(old.steps)) == (1.0, 1.0, 0.1)


def test_the_text_encoders_fill_declared_dataset_fields():
    from genexp.data.text import vocab_encode

    y = torch.tensor([0, 1])
    data = Dataset(name="t", x_train=["a good film", "a bad film"], y_train=y, x_test=["good"], y_test=y[:1],
                   num_classes=2)
    assert data.model_kwargs == {} and data.vocab is None and data.frozen_features is None
    data = vocab_encode(data, min_freq=1)
    assert data.model_kwargs["vocab_size"] == len(data.vocab) == 6
    with pytest.raises(AttributeError):
        data.tokenizer = None  # slots: what a step adds to a dataset is a declared field
    model = build_model(train_cfg("model=lstm", "model.embed_dim=4", "model.hidden_size=4"), data)
    assert model.embedding_layer().num_embeddings == 6


def test_as_today_reads_an_old_config_as_a_new_one_without_changing_it():
    """What `genexp table` reads of a run dir's config.yaml: an added key it lacks at its old default,
    a moved class under its new name; a key it records, and a group it lacks, are left as they are."""
    import copy

    old_target, new_target = next(iter(MOVED_TARGETS.items()))
    old = {"seed": 0, "model": {"name": "mlp", "freeze": True}, "optim": {"lr": 0.1}, "method": {"_target_": old_target}}
    kept = copy.deepcopy(old)
    new = as_today(old)
    assert old == kept  # the record itself is not changed
    assert new["model"] == {"name": "mlp", "freeze": True, "text_encoder": None}
    assert new["optim"] == {"lr": 0.1, "decay_rate": ADDED_KEYS["optim.decay_rate"],
                            "decay_steps": ADDED_KEYS["optim.decay_steps"]}
    assert new["method"]["_target_"] == new_target
    assert as_today({"seed": 0}) == {"seed": 0}
    today = as_today(new)
    assert today is new  # nothing to add: the same dict
