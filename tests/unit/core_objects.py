"""Test helper: read a test object's BTF, CO-RE records and section bytes with pyelftools.

Independent of netbee/loader/elf.py so that CO-RE tests exercise core.py alone."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Dict, List

from elftools.elf.elffile import ELFFile

from netbee.loader.btf import Btf
from netbee.loader.btf_ext import BtfExt, CoreRelo

BPF_DIR = pathlib.Path(__file__).resolve().parent.parent / "bpf"


@dataclass
class CoreObject:
    path: pathlib.Path
    btf: Btf
    relos: Dict[str, List[CoreRelo]]     # section name -> records
    sections: Dict[str, bytes]           # section name -> instructions
    programs: Dict[str, str]             # function symbol -> section name


def load(name: str) -> CoreObject:
    path = BPF_DIR / name
    with open(path, "rb") as f:
        elf = ELFFile(f)
        btf = Btf.parse(elf.get_section_by_name(".BTF").data())
        ext = BtfExt.parse(elf.get_section_by_name(".BTF.ext").data(), btf)
        sections = {}
        for sec in elf.iter_sections():
            if sec["sh_type"] == "SHT_PROGBITS" and sec["sh_flags"] & 0x4:  # SHF_EXECINSTR
                sections[sec.name] = sec.data()
        programs = {}
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC":
                programs[sym.name] = elf.get_section(sym["st_shndx"]).name
    return CoreObject(path, btf, ext.core_relos, sections, programs)
