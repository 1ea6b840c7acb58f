import pytest
from hypothesis import given
from hypothesis import strategies as st

from nucls_utils import io as nio

NAME = "TCGA-A1-A0SP-DX1_id-5ea4095addda5f8398977ebc_left-11841_top-57182_bottom-57525_right-12205"


def test_parse_real_name_left_top_bottom_right():
    f = nio.parse_fov_name(NAME + ".png")
    assert (f.slide, f.item_id) == ("TCGA-A1-A0SP-DX1", "5ea4095addda5f8398977ebc")
    assert (f.left, f.top, f.bottom, f.right) == (11841, 57182, 57525, 12205)
    assert (f.width, f.height) == (364, 343)
    assert f.hospital == "A1"
    assert str(f) == NAME


def test_multirater_prefix():
    f = nio.parse_fov_name(f"NP.12_#_E_#_{NAME}")
    assert (f.participant, f.evalset, f.slide) == ("NP.12", "E", "TCGA-A1-A0SP-DX1")
    assert nio.format_fov_name(f) == f"NP.12_#_E_#_{NAME}"


@given(left=st.integers(0, 10**6), top=st.integers(0, 10**6), w=st.integers(1, 5000), h=st.integers(1, 5000),
       hosp=st.from_regex(r"[A-Z0-9]{2}", fullmatch=True))
def test_format_parse_round_trip(left, top, w, h, hosp):
    f = nio.FovName(f"TCGA-{hosp}-A0SP-DX1", "abc123", left, top, top + h, left + w)
    assert nio.parse_fov_name(nio.format_fov_name(f)) == f


@pytest.mark.parametrize("bad", [
    "TCGA-A1-A0SP-DX1_left-1_top-2_bottom-3_right-4",            # no id
    "TCGA-A1-A0SP-DX1_id-x_left-1_top-2_right-4_bottom-3",        # wrong order
    "TCGA-A1-A0SP-DX1_id-x_left-10_top-2_bottom-30_right-4",      # right < left
])
def test_bad_names(bad):
    with pytest.raises(nio.NuclsFormatError, match=bad.split("_")[0]):
        nio.parse_fov_name(bad)


def test_hospital_of():
    assert nio.hospital_of("TCGA-OL-A5RU-DX1") == "OL"
    with pytest.raises(ValueError, match="cannot read a hospital"):
        nio.hospital_of("slide7")


@pytest.mark.parametrize("bad, message", [
    (f"_#_E_#_{NAME}", "empty participant"),
    (f"NP.1_#__#_{NAME}", "empty evaluation set"),
    (f" _#_E_#_{NAME}", "empty participant"),
    (f"NP.1_#_ _#_{NAME}", "empty evaluation set"),
    (f"NP.1_#_E_#_extra_#_{NAME}", "expected '<participant>_#_<set>_#_<fovname>'"),
    (f"NP.1_#_{NAME}", "expected '<participant>_#_<set>_#_<fovname>'"),
    (NAME.replace("-DX1", "-DX#1"), "'#'"),
    (NAME + "\n", "not a NuCLS FOV name"),
    (NAME.replace("left-11841", "left-011841"), "not a NuCLS FOV name"),
])
def test_bad_multirater_prefixes_and_slides(bad, message):
    with pytest.raises(nio.NuclsFormatError, match=message) as e:
        nio.parse_fov_name(bad)
    assert e.value.path == bad
