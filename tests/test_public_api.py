"""The public surface of DESIGN.md exists, and importing medmulti stays light."""

import subprocess
import sys

import medmulti as mm

DESIGN_NAMES = [
    "read_image", "Image", "PatientSequence", "MultiModalSequence", "build_fusion_model",
    "StudySpec", "ModalitySpec", "preprocess_study", "validate_manifest", "load_manifest",
    "resample_to", "register_rigid", "apply_window", "CT_WINDOWS", "check_coregistered",
    "MedmultiError", "MissingFileError", "CorruptFileError", "SeriesGeometryError",
    "UnsupportedDataError", "ManifestError", "ResourceLimitError", "UnsafePathError",
]


def test_every_exported_name_resolves():
    for name in mm.__all__:
        assert getattr(mm, name) is not None, name


def test_design_names_are_exported():
    missing = [n for n in DESIGN_NAMES if n not in mm.__all__]
    assert not missing


def test_import_has_no_heavy_side_effects():
    code = (
        "import sys, medmulti\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'SimpleITK', 'pydicom', 'nibabel') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_lists_every_subcommand():
    from medmulti.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
