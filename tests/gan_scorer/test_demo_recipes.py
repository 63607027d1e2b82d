"""The packaged scorer / regression demos stay in step with gan-demo (the same synthetic data, each
built under its own output_dir, and the same networks)."""

from pathlib import Path

from ohlora_cli import recipes


def test_demos_share_gan_demo_data_and_networks():
    demo = recipes.load("gan-demo")
    scorer_demo = recipes.load("gan-scorer-demo")
    regression_demo = recipes.load("gan-regression-demo")
    assert scorer_demo.train.method == "scorer" and regression_demo.train.method == "property-regression"
    same = lambda data: data.model_dump(exclude={"csv"})  # noqa: E731
    assert same(scorer_demo.data) == same(demo.data) == same(regression_demo.data)  # same seed, count, labels
    for recipe in (demo, scorer_demo, regression_demo):
        assert Path(recipe.data.csv).parent.parent == Path(recipe.output_dir)  # built under its own output_dir
    assert scorer_demo.model.resolution == demo.model.resolution
    # property-regression starts from gan-demo's last checkpoint: the networks must be the same
    fields = set(type(demo.model).model_fields) - {"checkpoint", "scorer"}
    assert {k: getattr(regression_demo.model, k) for k in fields} == {k: getattr(demo.model, k) for k in fields}
    assert Path(regression_demo.model.checkpoint) == Path(demo.output_dir)  # its latest checkpoint
    assert Path(regression_demo.model.scorer) == Path(scorer_demo.output_dir)
