"""The package's modules read each other through public names only: a name with a leading underscore is
its module's own, free to change without a look at the others. Read from the source (ast), not run.

The tests and benchmarks/ are left out on purpose: they read private names as hooks (test_model checks
`model._standardize`'s two spellings against float64, bench_variants swaps it for its variants)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "motion_ddpm_jax"


def private_reads(source: str) -> list[str]:
    """`module._name` reads and `from motion_ddpm_jax... import _name` imports of the package's modules in
    `source` (dunders aside), as 'line: text'."""
    tree = ast.parse(source)
    modules: set[str] = set()  # the local names the package's modules are bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("motion_ddpm_jax"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                elif node.module in ("motion_ddpm_jax", "motion_ddpm_jax.data"):
                    modules.add(alias.asname or alias.name)  # `from motion_ddpm_jax import model`
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("motion_ddpm_jax.") and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_reader_finds_each_kind_of_private_read():
    source = (
        "from motion_ddpm_jax import model as model_lib, kinematics\n"
        "from motion_ddpm_jax.sampling import _is_number, shown_caption\n"
        "def f(loaded):\n"
        "    from motion_ddpm_jax.data import bvh\n"
        "    return model_lib._standardize, kinematics.__name__, bvh._read, loaded._cache, kinematics.fk\n"
    )
    assert private_reads(source) == [
        "2: from motion_ddpm_jax.sampling import _is_number",
        "5: model_lib._standardize",
        "5: bvh._read",
    ]


def test_no_module_of_the_package_reads_another_modules_private_names():
    """evaluate had imported sampling's `_is_number`, kernels read `model._standardize_two_pass` and
    representation `kinematics._output_dtype` and `_compute_dtype`: each is public where it is shared."""
    found = {
        str(path.relative_to(PACKAGE)): reads
        for path in sorted(PACKAGE.rglob("*.py"))
        if (reads := private_reads(path.read_text()))
    }
    assert found == {}
