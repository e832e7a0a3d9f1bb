"""The native P-256 field engine against big ints, in the unix port (64-bit
words; bench/esp32 runs the same check in the 32-bit emulation), and the
backend selection: what use() answers when the native code cannot run."""
import pytest

import native
from conftest import ROOT, run_mp


@pytest.fixture(scope="module")
def native_dir(tmp_path_factory):
    return native.build(tmp_path_factory.mktemp("native"))


def test_field_ops_and_point_programs_agree_with_big_ints(native_dir):
    r = run_mp(ROOT / "tests" / "mp" / "p256_native_check.py", path=[native_dir], heap=native.HEAP)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "CHECK " in out and " 0 mismatches" in out, out


SELECT = """
import sys
from pos import p256
%s
got = p256.use("native")
print("USE", got, p256._native is not None)
print("USE", p256.use("mpz"), p256._native is not None)
"""


def test_use_falls_back_to_mpz_when_native_cannot_load():
    # The firmware source in a 128k heap: the engine does not compile there,
    # as on a port without a native emitter: mpz, no exception.
    r = run_mp(SELECT % "")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "USE mpz False\nUSE mpz False" in r.stdout, r.stdout + r.stderr


def test_use_falls_back_when_the_engine_gives_wrong_answers(native_dir):
    # An engine that loads but computes garbage (as a big-endian port would):
    # init()'s known-answer check keeps the backend off.
    patch = "from pos import p256_viper\np256_viper.run = lambda n, ws: None"
    r = run_mp(SELECT % patch, path=[native_dir], heap=native.HEAP)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "USE mpz False" in r.stdout, r.stdout + r.stderr


def test_use_native_when_available(native_dir):
    r = run_mp(SELECT % "", path=[native_dir], heap=native.HEAP)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "USE native True\nUSE mpz False" in r.stdout, r.stdout + r.stderr


def test_generated_modules_are_current():
    # p256_viper.py and p256_gtab.py are generated and committed: the files
    # must be what their generators write now (little-endian table included).
    import sys
    sys.path.insert(0, str(ROOT))
    from host_tools import gen_p256_table, gen_p256_viper
    assert (ROOT / "firmware" / "pos" / "p256_viper.py").read_text() == gen_p256_viper.generate()
    chunks = gen_p256_table.table()
    src = (ROOT / "firmware" / "pos" / "p256_gtab.py").read_text()
    for blob in chunks:
        assert gen_p256_table.literal(blob) in src
    x = int.from_bytes(chunks[0][:32], "little")
    assert x == gen_p256_table.GX  # entry 0 of chunk 0 is G, little-endian
