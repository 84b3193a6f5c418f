"""Adding a prompt template: drop a file into a folder and name it; no code changes.

`examples/my_prompts/generate.v3.toml` is a variant of the knowledge prompt. Use it with

    kecpm knowledge build --data runs/demo/data/val.json --store runs/demo/store --out runs/v2 \
        --templates-dir examples/my_prompts --template generate=generate@v3

or from Python, as below (the variables a template may use are listed by `prompt_variables`).
"""

from pathlib import Path

from kecpm.prompts import list_templates, load_template

HERE = Path(__file__).parent / "my_prompts"

if __name__ == "__main__":
    for template in list_templates([HERE]):
        print(f"{template.ref:20} {template.path}")
    variant = load_template("generate", search_dirs=[HERE])
    print(variant.ref, variant.input_variables)
    print(variant.format_text(demonstrations="(examples)", text="Alva Brenner joins Oakline FC", image_description=""))
