"""What records say about the machine: the instruction sets that decide int8 and bfloat16 speed."""

import pytest

from nin_keras.machine import describe_isa, machine_facts


@pytest.mark.parametrize("flags, expected", [
    ({"sse2", "avx", "avx2", "fma"}, "AVX2, no VNNI"),  # int8 widens to 16-bit products: slower than float32 here
    ({"avx2", "avx_vnni"}, "AVX2 + AVX-VNNI"),
    ({"avx2", "avx512f"}, "AVX-512, no VNNI"),
    ({"avx2", "avx512f", "avx512_vnni"}, "AVX-512 + VNNI"),
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"},
     "AVX-512 + VNNI + BF16 + AMX-INT8 + AMX-BF16"),
    ({"fp", "asimd", "asimddp", "i8mm"}, "NEON + dotprod + i8mm"),
    ({"fp", "asimd"}, "NEON, no dotprod"),
    ({"sse2", "avx"}, "no AVX2"),
    (set(), "unknown"),
])
def test_describe_isa_names_what_int8_and_bf16_speed_depend_on(flags, expected):
    assert describe_isa(flags) == expected


def test_machine_facts_record_this_machines_instruction_sets():
    facts = machine_facts(gpus=False)
    assert facts["isa"] == describe_isa() and facts["isa"]
