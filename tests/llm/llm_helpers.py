"""Helpers for the train-llm tests: a small dialogue CSV and a recipe around a tiny model."""

import textwrap

PAIRS = [
    ("hi!", "hello! i am lora."),
    ("what is your name?", "my name is lora."),
    ("how old are you?", "i am twenty two."),
    ("where do you live?", "i live in seoul."),
    ("what do you like?", "i like drawing faces."),
    ("favorite food?", "tteokbokki with cheese."),
    ("do you have a pet?", "a white cat named mochi."),
    ("good night!", "sweet dreams!"),
    ("are you a robot?", "i am a virtual character."),
    ("what season is best?", "autumn, for the red leaves."),
]
TEMPLATE = "{input} (answer start) ### answer: {output} (answer end)"


def write_csv(path, pairs=PAIRS, valid=()):
    lines = ["data_type,input_data,output_data"]
    lines += [f'train,"{q}","{a}"' for q, a in pairs]
    lines += [f'valid,"{q}","{a}"' for q, a in valid]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_recipe(tmp_path, *, arch="gpt-neox", backend="hf", csv=None, extra="", name="recipe.yaml",
                 epochs=60, batch_size=5, lr=0.01):
    csv = csv or write_csv(tmp_path / "dialogue.csv", valid=PAIRS[:2])
    text = f"""\
    kind: llm
    output_dir: {tmp_path / "run"}
    seed: 0
    model:
      path: {tmp_path / "run" / "tiny-model"}  # model.tiny builds inside output_dir
      tiny: {arch}
      backend: {backend}
    data:
      path: {csv}
      template: "{TEMPLATE}"
      max_length: 48
    lora:
      r: 16
      alpha: 32
      dropout: 0.0
      target_modules: all-linear
    train:
      batch_size: {batch_size}
      epochs: {epochs}
      learning_rate: {lr}
      logging_steps: 1
    generate:
      max_new_tokens: 24
      show: 2
    """
    path = tmp_path / name
    path.write_text(textwrap.dedent(text) + textwrap.dedent(extra), encoding="utf-8")
    return path
