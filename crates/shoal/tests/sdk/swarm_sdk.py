"""The Python Docker SDK (docker 7.x) driving shoal through its Docker API.

Run by tests/python_sdk.rs with:
  DOCKER_HOST   unix socket of an inactive shoal node (A)
  SECOND_HOST   unix socket of a second inactive shoal node (B)
  PORT_A, PORT_B  free loopback ports for their node-to-node traffic
  WITH_ENGINE   "1" when the nodes have a Docker Engine (container tasks run)
Every check raises on failure; the last line printed is "SDK OK".
"""
import os
import time

import docker
from docker.errors import APIError, NotFound
from docker.types import EndpointSpec, ServiceMode

A = docker.DockerClient(base_url=os.environ["DOCKER_HOST"])
B = docker.DockerClient(base_url=os.environ["SECOND_HOST"])
PORT_A, PORT_B = os.environ["PORT_A"], os.environ["PORT_B"]
WITH_ENGINE = os.environ.get("WITH_ENGINE") == "1"


def wait(what, f, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def expect_error(status, f):
    try:
        f()
    except APIError as e:
        assert e.status_code == status, (e.status_code, str(e))
        return str(e)
    raise AssertionError("expected an error %d" % status)


assert A.ping()
assert A.version()["ApiVersion"]
assert A.info()["Swarm"]["LocalNodeState"] == "inactive"
expect_error(503, lambda: A.nodes.list())

# Swarm init / inspect / update.
node_id = A.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:" + PORT_A,
                       task_history_retention_limit=4)
assert A.swarm.id, "swarm.reload() after init fills the attrs"
assert A.swarm.attrs["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"] == 4
assert A.info()["Swarm"]["NodeID"] == node_id
expect_error(503, lambda: A.swarm.init(advertise_addr="127.0.0.1",
                                       listen_addr="127.0.0.1:" + PORT_A))
old_worker = A.swarm.attrs["JoinTokens"]["Worker"]
A.swarm.update(rotate_worker_token=True)
A.swarm.reload()
worker_token = A.swarm.attrs["JoinTokens"]["Worker"]
assert worker_token != old_worker
assert A.swarm.get_unlock_key()["UnlockKey"] == ""

# A second node joins as a worker.
expect_error(400, lambda: B.swarm.join(remote_addrs=["127.0.0.1:" + PORT_A], join_token=old_worker,
                                       listen_addr="127.0.0.1:" + PORT_B))
assert B.info()["Swarm"]["LocalNodeState"] == "inactive"
assert B.swarm.join(remote_addrs=["127.0.0.1:" + PORT_A], join_token=worker_token,
                    listen_addr="127.0.0.1:" + PORT_B, advertise_addr="127.0.0.1")
assert B.info()["Swarm"]["LocalNodeState"] == "active"

# Nodes.
wait("2 ready nodes", lambda: [n.attrs["Status"]["State"] for n in A.nodes.list()]
     == ["ready", "ready"])
me = A.nodes.get(node_id)
assert me.attrs["ManagerStatus"]["Leader"] is True
spec = dict(me.attrs["Spec"])
spec["Labels"] = {"zone": "a"}
assert me.update(spec)
me.reload()
assert me.attrs["Spec"]["Labels"] == {"zone": "a"}
assert [n.id for n in A.nodes.list(filters={"role": "manager"})] == [node_id]

# Secrets and configs.
s = A.secrets.create(name="sdk-secret", data=b"hush", labels={"k": "v"})
assert A.secrets.get(s.id).name == "sdk-secret"
assert "sdk-secret" in [x.name for x in A.secrets.list()]
expect_error(409, lambda: A.secrets.create(name="sdk-secret", data=b"again"))
s.remove()
try:
    A.secrets.get(s.id)
    raise AssertionError("secret still there")
except NotFound:
    pass
cfg = A.configs.create(name="sdk-config", data=b"x=1")
assert A.configs.get(cfg.id).name == "sdk-config"
cfg.remove()

# Networks.
net = A.networks.create("sdk-net", driver="overlay", attachable=True)
assert A.networks.get(net.id).attrs["Driver"] == "overlay"
net.remove()

# Services.
svc = A.services.create("local/busybox:1", command=["sleep", "1d"], name="sdk-web",
                        mode=ServiceMode("replicated", replicas=2),
                        labels={"tier": "web"}, endpoint_spec=EndpointSpec(mode="vip"),
                        constraints=["node.role==manager"] if not WITH_ENGINE else None)
assert A.services.get("sdk-web").id == svc.id
assert [x.name for x in A.services.list(filters={"label": "tier=web"})] == ["sdk-web"]
wait("2 tasks", lambda: len(svc.tasks()) == 2)
if WITH_ENGINE:
    wait("2 running", lambda: len([t for t in svc.tasks()
                                    if t["Status"]["State"] == "running"]) == 2)
assert svc.scale(3)
wait("3 tasks", lambda: len(svc.tasks(filters={"desired-state": "running"})) == 3)
svc.reload()
assert svc.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
svc.update(env=["A=1"])
svc.reload()
assert svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["A=1"]
assert svc.force_update()
svc.remove()
wait("service gone", lambda: not A.services.list(filters={"name": "sdk-web"}))
expect_error(400, lambda: A.services.create("local/busybox:1", name="bad name!"))

# Leave and init again in the same daemons.
B.swarm.leave()
assert B.info()["Swarm"]["LocalNodeState"] == "inactive"
expect_error(503, lambda: A.swarm.leave())
assert A.swarm.leave(force=True)
assert A.info()["Swarm"]["LocalNodeState"] == "inactive"
A.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:" + PORT_A)
assert len(A.nodes.list()) == 1
A.swarm.leave(force=True)
print("SDK OK")
