"""The API server's URL paths for core and custom resources, names quoted."""

from __future__ import annotations

from urllib.parse import quote


def custom_objects_path(
    group: str,
    version: str,
    plural: str,
    name: str | None = None,
    *,
    namespace: str | None = None,
    subresource: str | None = None,
) -> str:
    """/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUBRESOURCE]]"""
    path = f"/apis/{group}/{version}"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    return _named(path + f"/{plural}", name, subresource)


def core_path(
    resource: str,
    name: str | None = None,
    *,
    namespace: str | None = None,
    subresource: str | None = None,
) -> str:
    """/api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUBRESOURCE]]"""
    path = "/api/v1"
    if namespace is not None:
        path += f"/namespaces/{quote(namespace, safe='')}"
    return _named(path + f"/{resource}", name, subresource)


def _named(path: str, name: str | None, subresource: str | None) -> str:
    if name is None:
        return path
    path += f"/{quote(name, safe='')}"
    return path + f"/{subresource}" if subresource else path
