"""cluster.yaml passes Ray's own cluster-config validation and keeps secrets out."""

from __future__ import annotations

import re

import yaml

from conftest import ROOT


def test_cluster_yaml_is_valid_for_the_ray_cluster_launcher():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # fills the launcher defaults, then raises on any schema error
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["gpu_workers"]["resources"]["GPU"] == 1
    assert any("[gpu]" in c for c in types["gpu_workers"]["worker_setup_commands"])
    assert any("[cpu]" in c for c in types["cpu_workers"]["worker_setup_commands"])
    assert 0 <= types["cpu_workers"]["min_workers"] <= types["cpu_workers"]["max_workers"]


def test_cluster_yaml_holds_no_secrets():
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"(?i)(secret|password|token)\s*[:=]\s*\S", text)


def test_validation_catches_a_broken_config():
    import copy

    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    broken = copy.deepcopy(config)
    del broken["available_node_types"]["gpu_workers"]["node_config"]
    with pytest.raises(Exception, match="node_config"):
        validate_config(prepare_config(broken))
