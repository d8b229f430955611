"""Sample grids (``simsearch.show``) and ``simsearch show``."""

from __future__ import annotations

import json

import pytest
import torch

from simsearch.cli import main
from simsearch.problems import get
from simsearch.show import psi_from_mapping, resolve_psi, sample_grid


@pytest.fixture(scope="module")
def traffic():
    return get("traffic-seg")


def test_grid_of_images_with_masks_and_validation_rows(traffic, tmp_path):
    out = tmp_path / "grid.png"
    fig = sample_grid(traffic, resolve_psi(traffic, "real"), n=5, columns=4, with_val=True, out=out)
    assert out.stat().st_size > 1000
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 10  # 5 simulated + 5 validation samples
    image = drawn[0].images[0].get_array()
    assert image.shape[:2] == (64, 128)  # the image with its mask to the right
    assert all(ax.get_title() == "image | mask" for ax in drawn)


def test_grid_titles_are_the_labels(tmp_path):
    problem = get("traffic-count")
    psi = resolve_psi(problem, "default")
    fig = sample_grid(problem, psi, n=3, seed=4)
    counts = problem.simulator.simulate(psi, 3, seed=4).y
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == [" ".join(str(int(v)) for v in c) for c in counts]


def test_resolve_psi_names(traffic, tmp_path):
    space = traffic.simulator.space
    assert torch.equal(resolve_psi(traffic, "default")["car_logits"], torch.zeros(5))
    assert torch.equal(resolve_psi(traffic, "real")["p_car"], traffic.real_psi["p_car"])
    with pytest.raises(ValueError, match="no ψ_real"):
        resolve_psi(get("digits"), "real")
    (tmp_path / "best_params.json").write_text(json.dumps(space.to_params(traffic.real_psi)))
    best = resolve_psi(traffic, "best", run_dir=tmp_path)
    assert all(torch.allclose(best[k], traffic.real_psi[k]) for k in best)
    nested = {k: v.tolist() for k, v in traffic.real_psi.items()}
    assert torch.allclose(psi_from_mapping(space, nested)["car_logits"], traffic.real_psi["car_logits"])
    with pytest.raises(ValueError, match="does not exist"):
        resolve_psi(traffic, str(tmp_path / "nope.json"))


def test_bad_params_files_are_named(traffic, tmp_path):
    good = traffic.simulator.space.to_params(traffic.real_psi)
    cases = {
        "unknown": ({**good, "p_bus": 0.3}, "p_bus"),
        "missing": ({k: v for k, v in good.items() if k != "weather_logits[2]"}, "weather_logits\\[2\\]"),
        "bounds": ({**good, "p_house": 2.0}, "p_house"),
        "shape": ({**{k: v for k, v in good.items() if not k.startswith("car_logits")},
                   "car_logits": [0.0, 1.0]}, "car_logits"),
        "type": ({**good, "p_car": "many"}, "p_car"),
    }
    for name, (values, pattern) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(values))
        with pytest.raises(ValueError, match=pattern):
            resolve_psi(traffic, str(path))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_psi(traffic, str(tmp_path / "broken.json"))


def test_cli_show_writes_png_and_reports_bad_files(tmp_path, capsys):
    out = tmp_path / "digits.png"
    assert main(["show", "--problem", "digits", "--n", "4", "--with-val", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"width": 0.1, "stroke_colour": 3}))
    assert main(["show", "--problem", "digits", "--params", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stroke_colour" in err and "class_logits[0]" in err
