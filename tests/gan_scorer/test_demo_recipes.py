"""The packaged scorer / regression demos stay in step with gan-demo (same data, same networks)."""

from pathlib import Path

from ohlora_cli import recipes


def test_demos_share_gan_demo_data_and_networks():
    demo = recipes.load("gan-demo")
    scorer_demo = recipes.load("gan-scorer-demo")
    regression_demo = recipes.load("gan-regression-demo")
    assert scorer_demo.train.method == "scorer" and regression_demo.train.method == "property-regression"
    assert scorer_demo.data == demo.data == regression_demo.data
    assert scorer_demo.model.resolution == demo.model.resolution
    # property-regression starts from gan-demo's last checkpoint: the networks must be the same
    fields = set(type(demo.model).model_fields) - {"checkpoint", "scorer"}
    assert {k: getattr(regression_demo.model, k) for k in fields} == {k: getattr(demo.model, k) for k in fields}
    assert Path(regression_demo.model.checkpoint) == Path(demo.output_dir)  # its latest checkpoint
    assert Path(regression_demo.model.scorer) == Path(scorer_demo.output_dir)
