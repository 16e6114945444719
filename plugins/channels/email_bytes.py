"""An email's bytes, as the email package writes them, without its per-header machinery.

`EmailChannel.build` makes an `EmailMessage` and `bytes()` flattens it: every header is parsed
into a header object when set and folded back when written, and a new header class is made
for each, which costs milliseconds a message. The headers Boomerang writes are nearly always
short printable ASCII, which the package writes as they are: those are written directly here,
and anything else (non-ASCII, encoded-word look-alikes, long lines) goes through the
package's own parse and fold, header by header. Bodies are encoded by the package's own
function, and the boundary is chosen as its generator chooses it. So the bytes are the
package's bytes (tests/test_email_bytes.py compares the two on generated messages).

Bodies are readable as they are (`transfer_encoding`): UTF-8 text goes out as 8-bit, so an
`.eml` opened in an editor or `less` shows the Russian words themselves; quoted-printable only
where 8-bit may not go (a server without 8BITMIME, a line over SMTP's 998 octets). The
package's own choice was base64 for most Cyrillic text: unreadable without a mail client.
"""

from __future__ import annotations

import re
from email.contentmanager import _encode_text  # what `set_content` encodes a text body with
from email.generator import BytesGenerator
from email.policy import Policy

# A header the email package writes unchanged: printable ASCII words separated by single
# spaces (no folding whitespace to normalise), no `=?` (which it would read as an encoded word).
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")
_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_BOUNDARY = re.compile(r"={15}[0-9]{19}==")  # the generator's, unless it collided with the text
# RFC 5322's limit on a line, without its CRLF: a 7bit or 8bit body may not have a longer one.
_LONGEST_LINE = 998
_MESSAGE_ID = re.compile(r"<[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>")


def _plain(value: str) -> bool:
    return _PLAIN.fullmatch(value) is not None and "=?" not in value


def _boundary(text: bytes) -> str:
    """The generator's boundary for `text`, as `BytesGenerator._make_boundary` chooses it, which
    compiles a new pattern for every message to look for it in the text: a random boundary
    that does not occur in the text at all needs no look (and one that does gets the package's)."""
    boundary = BytesGenerator._make_boundary()
    return boundary if boundary.encode("ascii") not in text else BytesGenerator._make_boundary(text)


def transfer_encoding(text: str, eight_bit: bool = True) -> str:
    """The `Content-Transfer-Encoding` a text body is written with: as it is (`7bit` for ASCII,
    `8bit` for UTF-8 where `eight_bit` allows it) when its lines fit SMTP's and it has no NUL,
    `quoted-printable` otherwise, which keeps ASCII and most Latin text readable."""
    data = text.encode("utf-8")
    if b"\0" in data or max(map(len, data.splitlines()), default=0) > _LONGEST_LINE:
        return "quoted-printable"
    if data.isascii():
        return "7bit"
    return "8bit" if eight_bit else "quoted-printable"


class EmailBytes:
    """Writes the headers and bodies of `EmailChannel`'s messages with `policy`."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.nl = policy.linesep
        self.limit = policy.max_line_length or 0

    def header(self, name: str, value: str, kind: str = "unstructured") -> str:
        """One header line as the package folds it; `kind` says which values it writes unchanged:
        `unstructured` (Subject, Date...), `address` (a bare address) or `message-id`."""
        plain = {"address": _ADDRESS, "message-id": _MESSAGE_ID}.get(kind)
        short = len(name) + 2 + len(value) <= self.limit
        if short and (plain.fullmatch(value) is not None if plain else _plain(value)):
            return f"{name}: {value}{self.nl}"
        return self.folded(name, value)

    def folded(self, name: str, value: str) -> str:
        """A header line through the package's own parse and fold (raises as setting it would)."""
        _, parsed = self.policy.header_store_parse(name, value)
        return self.policy.fold_binary(name, parsed).decode("ascii", "surrogateescape")

    def list_unsubscribe(self, value: str) -> str:
        """`List-Unsubscribe`, folded only between its entries (as `_ListUnsubscribeHeader`)."""
        if not _plain(value):
            return self.folded("List-Unsubscribe", value)
        return f"List-Unsubscribe: {(',' + self.nl + ' ').join(value.split(', '))}{self.nl}"

    def text_part(self, text: str, subtype: str, mime_version: bool) -> str:
        """A text part's headers, blank line and body, as `set_content` and the generator write it
        (8-bit where `transfer_encoding` allows it: the file is what an 8BITMIME server gets)."""
        cte, body = _encode_text(text, "utf-8", transfer_encoding(text), self.policy)
        headers = f'Content-Type: text/{subtype}; charset="utf-8"{self.nl}'
        headers += f"Content-Transfer-Encoding: {cte}{self.nl}"
        if mime_version:  # `EmailMessage.set_content` adds it to the part it sets
            headers += f"MIME-Version: 1.0{self.nl}"
        return headers + self.nl + body

    def alternative(self, headers: str, parts: list[str]) -> bytes:
        """A `multipart/alternative` message of `parts`, with a boundary none of them contains."""
        texts = [part.encode("ascii", "surrogateescape") for part in parts]
        boundary = _boundary(self.nl.encode("ascii").join(texts))
        parameter = f'boundary="{boundary}"'
        if _BOUNDARY.fullmatch(boundary) and self.limit == 78:
            # Too long for one line, so the package folds it before the boundary.
            content_type_line = f"Content-Type: multipart/alternative;{self.nl} {parameter}{self.nl}"
        else:  # a boundary made longer to differ from the text
            content_type_line = self.folded("Content-Type", f"multipart/alternative; {parameter}")
        head = f"{headers}MIME-Version: 1.0{self.nl}{content_type_line}{self.nl}--{boundary}{self.nl}"
        delimiter = f"{self.nl}--{boundary}{self.nl}".encode("ascii")
        end = f"{self.nl}--{boundary}--{self.nl}".encode("ascii")
        return head.encode("ascii", "surrogateescape") + delimiter.join(texts) + end
