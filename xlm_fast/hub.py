"""Where a pretrained name points: a local directory, or the snapshot of a hub id that is
already in the local Hugging Face cache. Shared by the config, the model and the
tokenizer, below all three; nothing here downloads."""

import os


def hub_cache_dir(cache_dir=None):
    if cache_dir is not None:
        return cache_dir
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    hf_home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.path.join(hf_home, "hub")


def checked_path(name_or_path):
    """pretrained_model_name_or_path as a str, or a TypeError naming it."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError("pretrained_model_name_or_path must be a str or os.PathLike (a local directory or a hub id), "
                        f"got {type(name_or_path).__name__}")
    return os.fspath(name_or_path)


def resolve_model_dir(name_or_path, cache_dir=None, revision="main"):
    """A local directory, or the snapshot of a hub id already in the local Hugging Face
    cache. Nothing is downloaded: a model that is in neither place is an error."""
    path = checked_path(name_or_path)
    if os.path.isdir(path):
        return path
    repo_dir = os.path.join(hub_cache_dir(cache_dir), "models--" + path.replace("/", "--"))
    ref_file = os.path.join(repo_dir, "refs", revision)
    commit = revision
    if os.path.isfile(ref_file):
        with open(ref_file, encoding="utf-8") as handle:
            commit = handle.read().strip()
    snapshot = os.path.join(repo_dir, "snapshots", commit)
    if os.path.isdir(snapshot):
        return snapshot
    raise OSError(
        f"pretrained_model_name_or_path={path!r} is neither a local directory nor a model in the "
        f"local Hugging Face cache ({hub_cache_dir(cache_dir)}); xlm_fast never downloads: "
        "fetch it once with huggingface_hub or transformers, or pass a local directory"
    )
