"""A local stand-in for the Hub API (`huggingface_hub.HfApi`) that records what would be created and uploaded."""

import fnmatch
import json
from pathlib import Path

from huggingface_hub import ModelCard, RepoUrl

__all__ = ["RecordingHubApi"]


class RecordingHubApi:
    """A local stand-in for `huggingface_hub.HfApi`: records what would be created and uploaded (no network)."""

    def __init__(self, user: str = "user", token=None):
        self.user = user
        self.token = token
        self.calls = []
        self.uploads = []

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
        full_id = repo_id if "/" in repo_id else f"{self.user}/{repo_id}"
        self.calls.append(("create_repo", full_id, {"private": private, "exist_ok": exist_ok}))
        return RepoUrl(f"https://huggingface.co/{full_id}")

    def create_branch(self, repo_id, branch, exist_ok=False, repo_type=None):
        self.calls.append(("create_branch", repo_id, {"branch": branch, "exist_ok": exist_ok}))

    def upload_folder(
        self,
        repo_id,
        folder_path,
        commit_message=None,
        create_pr=None,
        revision=None,
        repo_type=None,
        ignore_patterns=None,
    ):
        folder = Path(folder_path)
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in folder.rglob("*")
            if path.is_file()
            and not any(
                fnmatch.fnmatch(path.relative_to(folder).as_posix(), pattern) for pattern in ignore_patterns or []
            )
        }
        self.uploads.append(
            {
                "repo_id": repo_id,
                "files": files,
                "commit_message": commit_message,
                "create_pr": create_pr,
                "revision": revision,
            }
        )
        return f"https://huggingface.co/{repo_id}/commit/0123456789abcdef"

    def uploaded_card(self, index: int = -1) -> ModelCard:
        """The `README.md` of an upload, parsed as the Hub parses it."""
        return ModelCard(self.uploads[index]["files"]["README.md"].decode("utf-8"))

    def uploaded_json(self, name: str, index: int = -1) -> dict:
        return json.loads(self.uploads[index]["files"][name])
