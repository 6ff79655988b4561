"""Where the node keeps its state, and the settings it was started with.

Everything the node creates is named from ``PISTIO_NODE_NAME`` (default ``pistio``) and
recorded under ``PISTIO_STATE_DIR`` (default ``/run/pistio``: tmpfs, so a reboot starts
clean). ``pistio up`` writes the settings to ``node.json`` there; every later command reads
them back, so only ``PISTIO_STATE_DIR`` has to match between commands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pistio.node.network.bridge import NodeNetwork

DEFAULT_STATE_DIR = "/run/pistio"


@dataclass(frozen=True)
class NodeConfig:
    state_dir: Path
    network: NodeNetwork = field(default_factory=NodeNetwork)
    discovery_grpc_port: int = 15010  # on the bridge's gateway address, for the sidecars
    discovery_http: str = "127.0.0.1:15014"  # where `pistio proxy-status` looks by default
    dns_port: int = 53
    # kubelet's restart back-off: 10 s doubling to 5 min.
    restart_backoff: float = 10.0
    restart_backoff_max: float = 300.0

    @property
    def node_file(self) -> Path:
        return self.state_dir / "node.json"

    @property
    def socket(self) -> Path:
        return self.state_dir / "node.sock"

    @property
    def discovery_dir(self) -> Path:
        return self.state_dir / "discovery"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def node_log(self) -> Path:
        return self.state_dir / "node.log"

    @property
    def discovery_address(self) -> str:
        return f"{self.network.gateway}:{self.discovery_grpc_port}"

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["state_dir"] = str(self.state_dir)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> NodeConfig:
        # node.json also records the running node's pids: keep only the settings.
        known = {f.name for f in fields(cls)} - {"network", "state_dir"}
        values = {k: v for k, v in data.items() if k in known}
        net = data.get("network") or {}
        return cls(state_dir=Path(str(data["state_dir"])),
                   network=NodeNetwork(**net), **values)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NodeConfig:
        env = os.environ if env is None else env
        name = env.get("PISTIO_NODE_NAME", "pistio")
        net = NodeNetwork(
            name=name,
            bridge=env.get("PISTIO_BRIDGE", f"{name}0"[:15]),
            pod_cidr=env.get("PISTIO_POD_CIDR", "10.88.0.0/16"),
            service_cidr=env.get("PISTIO_SERVICE_CIDR", "10.96.0.0/16"),
        )
        backoff = float(env.get("PISTIO_RESTART_BACKOFF", "10"))
        return cls(
            state_dir=Path(env.get("PISTIO_STATE_DIR", DEFAULT_STATE_DIR)),
            network=net,
            discovery_http=env.get("PISTIO_NODE_DISCOVERY_HTTP", "127.0.0.1:15014"),
            restart_backoff=backoff,
            restart_backoff_max=max(backoff, float(env.get("PISTIO_RESTART_BACKOFF_MAX", "300"))),
        )


def load_node_config(env: Mapping[str, str] | None = None) -> NodeConfig:
    """The running (or last) node's settings if it left them, else the environment's."""
    fresh = NodeConfig.from_env(env)
    try:
        return NodeConfig.from_json(json.loads(fresh.node_file.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return fresh
