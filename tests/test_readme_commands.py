"""The README's commands still run: the rpexec example on CPU with the config the repo ships, and each
figure's command (the cheap ones through main([...]) into tmp_path). Plain `pytest` imports this checkout."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import rpsim
from rpsim.cli.main import main as rpsim_main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def commands(block: str) -> list[list[str]]:
    """Each line of a block as argv, its trailing `# comment` dropped."""
    out = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def test_plain_pytest_imports_this_checkout():
    assert Path(rpsim.__file__).resolve().is_relative_to(ROOT)


def test_readme_rpexec_example_runs_on_cpu(tmp_path, monkeypatch, capsys):
    from rpexec.cli import main as rpexec_main
    block = next(b for b in bash_blocks(README) if "--check-grads\n" in b and len(commands(b)) == 2)
    (export, run) = commands(block)
    model = export[export.index("--model") + 1]
    assert (ROOT / model).is_file(), f"README's rpexec example uses {model}, which the repo does not ship"
    monkeypatch.chdir(tmp_path)
    export[export.index("--model") + 1] = str(ROOT / model)
    assert export[0] == "rpsim" and rpsim_main(export[1:]) == 0
    assert run[0] == "rpexec" and rpexec_main(run[1:]) == 0
    assert "check-grads ok" in capsys.readouterr().out


def figure_commands() -> list[tuple[list[str], str]]:
    """(argv, figure path) for every README command that writes a docs/*.png shown in the README."""
    shown = set(re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", README))
    found = []
    for block in bash_blocks(README):
        for argv in commands(block):
            outs = [a for a in argv if a in shown]
            if outs:
                found.append((argv, outs[0]))
    return found


def test_readme_names_a_command_for_its_rpsim_figures():
    made = {path for _argv, path in figure_commands()}
    assert {"docs/bubbles-llama70b-roundpipe.png", "docs/compare-llama70b-4090x8.png"} <= made


@pytest.mark.parametrize("argv,path", [(argv, path) for argv, path in figure_commands() if argv[0] == "rpsim"],
                         ids=lambda x: x if isinstance(x, str) else x[1])
def test_readme_figure_command_runs(argv, path, tmp_path, monkeypatch):
    """Run with a shorter model (--model-override) so CI stays fast; the figure code paths are the same.
    The experiments' figure commands (python3 experiments/...) re-read measured data for a minute or more;
    their figure functions are tested in tests/test_experiment_figures.py."""
    assert argv[0] == "rpsim"
    target = tmp_path / Path(path).name
    argv = [str(target) if a == path else a for a in argv[1:]]
    argv += ["--model-override", "n_layers=8"]
    code = rpsim_main(argv)
    assert code in (0, 1)  # the README says the compare figure's command exits 1 (nothing fits)
    assert target.stat().st_size > 10_000
