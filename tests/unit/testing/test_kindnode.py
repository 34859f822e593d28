"""The kind node image: each image kubeadm asks for is made from a binary we build, and
the image's cache key changes exactly when something that goes into it does."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.testing.images import ImageTarball
from modelcache.testing.kindnode import base_rootfs_hooks, image_source, node_image_key

KUBEADM_IMAGES = [  # `kubeadm config images list --kubernetes-version v1.35.4`
    "registry.k8s.io/kube-apiserver:v1.35.4",
    "registry.k8s.io/kube-controller-manager:v1.35.4",
    "registry.k8s.io/kube-scheduler:v1.35.4",
    "registry.k8s.io/kube-proxy:v1.35.4",
    "registry.k8s.io/coredns/coredns:v1.13.1",
    "registry.k8s.io/pause:3.10.1",
    "registry.k8s.io/etcd:3.6.6-0",
]


def test_every_image_kubeadm_lists_has_a_source_here() -> None:
    sources = {ref.split("/")[-1].split(":")[0]: image_source(ref) for ref in KUBEADM_IMAGES}

    assert sources == {
        "kube-apiserver": "scratch:kube-apiserver",
        "kube-controller-manager": "scratch:kube-controller-manager",
        "kube-scheduler": "scratch:kube-scheduler",
        "kube-proxy": "base:kube-proxy",  # iptables and conntrack: the node base under it
        "coredns": "coredns",
        "pause": "pause",
        "etcd": "scratch:etcd",
    }


def test_an_image_nothing_here_makes_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="kindnetd"):
        image_source("docker.io/kindest/kindnetd:v20250512")


def test_the_node_image_key_follows_the_pause_and_coredns_inputs() -> None:
    pause = ImageTarball("p", Path("pause-3.10-aaaa.tar"))
    coredns = ImageTarball("c", Path("coredns-v1.15.0-bbbb.tar"))
    other = ImageTarball("p", Path("pause-3.10-cccc.tar"))

    assert node_image_key(pause, coredns) == node_image_key(pause, coredns)
    assert node_image_key(other, coredns) != node_image_key(pause, coredns)


def test_the_base_gets_kinds_files_and_its_systemd_units_enabled() -> None:
    hooks = "\n".join(base_rootfs_hooks(Path("/mod/kind@v0.33.0")))

    assert "/mod/kind@v0.33.0/images/base/files/usr/local/bin/." in hooks
    assert "systemctl enable kubelet.service containerd.service" in hooks
    assert "/kind/bin/mount-product-files.sh" in hooks
    assert "cri-base.json" in hooks
