"""``GET /system_stats`` -> :class:`SystemStats`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfywatch.parse.shape import as_bool, as_int, as_list, as_map, as_opt_int, as_shared_str
from comfywatch.parse.text import MAX_ARGS, MAX_DEVICES, Cut, capped

__all__ = ["Device", "SystemStats", "parse_system_stats"]


@dataclass(frozen=True, slots=True)
class Device:
    """One torch device as ComfyUI reports it (always exactly one in 0.3.64)."""

    name: str
    type: str
    index: int | None
    vram_total: int | None
    vram_free: int | None
    torch_vram_total: int | None
    torch_vram_free: int | None

    @property
    def vram_meaningful(self) -> bool:
        """False for CPU and DirectML devices, whose "VRAM" numbers are system RAM or made up."""
        return self.type not in {"cpu", "directml", "privateuseone"}


@dataclass(frozen=True, slots=True)
class SystemStats:
    """The parts of ``/system_stats`` comfywatch exports or reasons about."""

    os: str
    comfyui_version: str
    python_version: str
    pytorch_version: str
    ram_total: int
    ram_free: int
    embedded_python: bool | None
    argv: tuple[str, ...]
    devices: tuple[Device, ...]

    @property
    def gpu(self) -> Device | None:
        """The first device whose VRAM figures mean something; None on a CPU-only server."""
        return next((device for device in self.devices if device.vram_meaningful), None)

    @property
    def listens_on_all_interfaces(self) -> bool:
        """True when ``--listen`` was given bare or with a wildcard address (reachable from the network)."""
        args = list(self.argv)
        for position, arg in enumerate(args):
            if arg == "--listen":
                following = args[position + 1] if position + 1 < len(args) else ""
                if not following or following.startswith("--"):
                    return True
                return any(part.strip() in {"0.0.0.0", "::", ""} for part in following.split(","))
            if arg.startswith("--listen="):
                value = arg.split("=", 1)[1]
                return any(part.strip() in {"0.0.0.0", "::", ""} for part in value.split(","))
        return False


def _device(value: Any, path: str) -> Device:
    raw = as_map(value, path)
    index = raw.get("index")
    return Device(
        name=as_shared_str(raw.get("name"), f"{path}.name"),
        type=as_shared_str(raw.get("type"), f"{path}.type"),
        index=None if index is None else as_int(index, f"{path}.index"),
        vram_total=as_opt_int(raw.get("vram_total"), f"{path}.vram_total"),
        vram_free=as_opt_int(raw.get("vram_free"), f"{path}.vram_free"),
        torch_vram_total=as_opt_int(raw.get("torch_vram_total"), f"{path}.torch_vram_total"),
        torch_vram_free=as_opt_int(raw.get("torch_vram_free"), f"{path}.torch_vram_free"),
    )


def parse_system_stats(body: Any) -> SystemStats:
    """Parse a ``/system_stats`` body (local ComfyUI and Comfy Cloud share the shape).

    Devices beyond :data:`~comfywatch.parse.text.MAX_DEVICES` are dropped unread (and the cut counted): each
    becomes four series. So are arguments beyond :data:`~comfywatch.parse.text.MAX_ARGS`: a mebibyte of empty
    ones would be a tuple of 340,000 kept by the target.
    """
    root = as_map(body, "$")
    system = as_map(root.get("system"), "system")
    devices = capped(as_list(root.get("devices"), "devices"), MAX_DEVICES, Cut.DEVICES)
    argv = capped(as_list(system.get("argv", []), "system.argv"), MAX_ARGS, Cut.ARGV)
    embedded = system.get("embedded_python")
    return SystemStats(
        os=as_shared_str(system.get("os"), "system.os"),
        comfyui_version=as_shared_str(system.get("comfyui_version"), "system.comfyui_version"),
        python_version=as_shared_str(system.get("python_version"), "system.python_version"),
        pytorch_version=as_shared_str(system.get("pytorch_version"), "system.pytorch_version"),
        ram_total=as_int(system.get("ram_total"), "system.ram_total"),
        ram_free=as_int(system.get("ram_free"), "system.ram_free"),
        embedded_python=None if embedded is None else as_bool(embedded, "system.embedded_python"),
        argv=tuple(as_shared_str(arg, f"system.argv[{i}]") for i, arg in enumerate(argv)),
        devices=tuple(_device(d, f"devices[{i}]") for i, d in enumerate(devices)),
    )
