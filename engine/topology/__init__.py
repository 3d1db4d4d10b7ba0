"""A target is a deployment: standalone, a primary with replicas, Sentinel-watched, or a Cluster.

`model` holds the frozen description, `parse` turns ROLE / INFO / CLUSTER / SENTINEL replies into it
(pure), `discover` asks the servers (the only I/O here, through a connect callable it is given).
"""

from engine.topology.model import Node, SentinelView, Topology

__all__ = ["Node", "SentinelView", "Topology"]
