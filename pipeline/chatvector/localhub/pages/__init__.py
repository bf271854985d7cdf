"""The local Hub's web pages: what a browser sees at the links the pipeline prints (`/{repo}`,
`/{repo}/tree/{sha}`...), rendered on the server as plain HTML (no JavaScript).

    /                                   the repos the viewer may see (also /models, /datasets, /{namespace})
    /{repo}                             the card (metadata chips, body, λ chart), the files, the last commits
    /{repo}/tree/{rev}[/{path}]         a revision's (or folder's) files, with sizes and LFS marks
    /{repo}/blob/{rev}/{path}           one file: its text, or its size, sha256 and download link
    /{repo}/commit/{sha}                a commit: title, message, author, date, files changed
    /{repo}/commits/{rev}               the history

`{repo}` is `ns/name` for a model and `datasets/ns/name` (spaces/, kernels/) for the other types; a revision is
a branch, a tag or a commit sha (`refs%2Fpr%2F1` as one segment). The routes come last in routes.py, so no page
ever shadows the API, `/resolve` or LFS. Modules: `render` (templates, links, headers), `cardhtml` (a card as
safe HTML), `views` (the handlers).
"""

from chatvector.localhub.pages.views import (
    blob_page,
    commit_page,
    commits_page,
    listing,
    not_found,
    repo_page,
    tree_page,
)

__all__ = ["blob_page", "commit_page", "commits_page", "listing", "not_found", "repo_page", "tree_page"]
