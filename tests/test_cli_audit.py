"""``receval audit --config``: runs the [audits.*] of a config, prints or writes them."""

from __future__ import annotations

import json
from pathlib import Path

from receval.cli import main

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "data"

CONFIG = f"""
[model]
name = "audit only"

[settings]
n_boot = 100

[inputs]
cand = "{(DATA / 'run_cand.parquet').as_posix()}"
catalog = "{(DATA / 'catalog.parquet').as_posix()}"
users = "{(DATA / 'users.parquet').as_posix()}"

[audits.safety]
run = "cand"
flags = "catalog"
user_groups = "users"
group_column = "age_band"
"""


def test_audit_json_and_table(tmp_path, capsys):
    cfg = tmp_path / "a.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "audit.json"
    assert main(["audit", "--config", str(cfg), "--output", "json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    safety = printed["audits"]["safety"]
    assert safety["overall"]["group"] == "(all)" and printed["errors"] == []
    assert {g["group"] for g in safety["groups"]} == {"18-24", "25-34", "35-54", "55+"}
    assert main(["audit", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "== safety" in text and "slot_share" in text and "group=55+" in text
    # no raw ids in the output
    assert "u0" not in text and "i0" not in text


def test_audit_errors_exit_2(tmp_path, capsys):
    cfg = tmp_path / "a.toml"
    cfg.write_text(CONFIG.replace('group_column = "age_band"', 'group_column = "no_such_column"'))
    assert main(["audit", "--config", str(cfg)]) == 2
    assert "audits.safety" in capsys.readouterr().err
    cfg.write_text(CONFIG.split("[audits.safety]")[0])
    assert main(["audit", "--config", str(cfg)]) == 2
    assert "declares no [audits" in capsys.readouterr().err
