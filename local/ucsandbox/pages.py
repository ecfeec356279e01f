"""HTML of the sandbox's authorize (consent) page and its error page; every value is escaped."""

from __future__ import annotations

from html import escape

_STYLE = """
  :root { color-scheme: light; }
  * { box-sizing: border-box; }
  body { margin: 0; min-height: 100vh; display: flex; align-items: center; justify-content: center;
         font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: linear-gradient(160deg, #eef2f7 0%, #dde6f0 100%); color: #1f2933; }
  .card { width: min(440px, calc(100vw - 32px)); background: #fff; border-radius: 12px;
          box-shadow: 0 10px 30px rgba(31, 41, 51, .12); overflow: hidden; }
  .brand { background: #1c3d5a; color: #fff; padding: 18px 28px; font-weight: 600; letter-spacing: .02em; }
  .brand small { display: block; font-weight: 400; opacity: .75; font-size: 12px; letter-spacing: .08em;
                 text-transform: uppercase; }
  .content { padding: 24px 28px 28px; }
  h1 { font-size: 20px; margin: 0 0 8px; }
  p { margin: 0 0 16px; color: #52606d; }
  .app { font-weight: 600; color: #1f2933; }
  ul.scopes { margin: 0 0 20px; padding: 12px 16px 12px 32px; background: #f5f7fa; border-radius: 8px; }
  label { display: block; font-weight: 600; font-size: 14px; margin-bottom: 6px; }
  input[type=text] { width: 100%; padding: 10px 12px; font: inherit; border: 1px solid #cbd2d9;
                     border-radius: 8px; margin-bottom: 20px; }
  input[type=text]:focus { outline: 2px solid #3e7bfa; border-color: #3e7bfa; }
  .actions { display: flex; gap: 12px; }
  button { flex: 1; padding: 11px 16px; font: inherit; font-weight: 600; border-radius: 8px; cursor: pointer;
           border: 1px solid transparent; }
  #approve { background: #2f855a; color: #fff; }
  #approve:hover { background: #276749; }
  #deny { background: #fff; color: #9b2c2c; border-color: #e3b5b5; }
  #deny:hover { background: #fff5f5; }
  .notice { background: #fff5f5; color: #9b2c2c; border: 1px solid #f2c4c4; border-radius: 8px;
            padding: 10px 12px; margin-bottom: 16px; font-size: 14px; }
  .meta { margin-top: 20px; font-size: 12px; color: #7b8794; word-break: break-all; }
"""


def _layout(title: str, content: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        '<main class="card">\n'
        '<div class="brand">UltraCart<small>Local sandbox &middot; not the real UltraCart</small></div>\n'
        f'<div class="content">\n{content}\n</div>\n</main>\n</body>\n</html>\n'
    )


def consent_page(
    *,
    action: str,
    application_name: str,
    client_id: str,
    redirect_uri: str,
    state: str,
    scopes: list[str],
    merchant_id: str = "DEMO1",
    notice: str | None = None,
) -> str:
    """The page a merchant sees at /oauth/authorize: approve or deny the application."""
    scope_items = "".join(f"<li>{escape(scope)}</li>" for scope in scopes) or "<li>(no permissions)</li>"
    notice_html = f'<div class="notice" role="alert">{escape(notice)}</div>\n' if notice else ""
    content = f"""{notice_html}<h1>Authorize application</h1>
<p><span class="app">{escape(application_name)}</span> is requesting access to your UltraCart account.</p>
<p>It will be able to:</p>
<ul class="scopes">{scope_items}</ul>
<form method="post" action="{escape(action)}">
  <input type="hidden" name="response_type" value="code">
  <input type="hidden" name="client_id" value="{escape(client_id)}">
  <input type="hidden" name="redirect_uri" value="{escape(redirect_uri)}">
  <input type="hidden" name="state" value="{escape(state)}">
  <label for="merchant_id">Merchant ID</label>
  <input type="text" id="merchant_id" name="merchant_id" value="{escape(merchant_id)}"
         autocomplete="off" spellcheck="false" maxlength="32" required>
  <div class="actions">
    <button type="submit" id="approve" name="decision" value="approve">Approve</button>
    <button type="submit" id="deny" name="decision" value="deny" formnovalidate>Deny</button>
  </div>
</form>
<div class="meta">Client ID: {escape(client_id)}<br>Returns to: {escape(redirect_uri)}</div>"""
    return _layout("Authorize application - UltraCart", content)


def device_page(
    *,
    action: str,
    application_name: str,
    user_code: str,
    merchant_id: str = "DEMO1",
    notice: str | None = None,
) -> str:
    """The verification page of a device authorization: enter the code shown on the device."""
    notice_html = f'<div class="notice" role="alert">{escape(notice)}</div>\n' if notice else ""
    content = f"""{notice_html}<h1>Connect a device</h1>
<p><span class="app">{escape(application_name)}</span> is asking for access to your UltraCart account
from a device. Enter the code the device shows.</p>
<form method="post" action="{escape(action)}">
  <label for="user_code">Code shown on the device</label>
  <input type="text" id="user_code" name="user_code" value="{escape(user_code)}"
         autocomplete="off" spellcheck="false" maxlength="16" required>
  <label for="merchant_id">Merchant ID</label>
  <input type="text" id="merchant_id" name="merchant_id" value="{escape(merchant_id)}"
         autocomplete="off" spellcheck="false" maxlength="32" required>
  <div class="actions">
    <button type="submit" id="approve" name="decision" value="approve">Approve</button>
    <button type="submit" id="deny" name="decision" value="deny" formnovalidate>Deny</button>
  </div>
</form>"""
    return _layout("Connect a device - UltraCart", content)


def device_done_page(*, approved: bool) -> str:
    """After the merchant's decision on the verification page."""
    if approved:
        content = '<h1 id="result">Device connected</h1>\n<p>You can return to your device.</p>'
    else:
        content = '<h1 id="result">Request denied</h1>\n<p>The device was not given access.</p>'
    return _layout("Connect a device - UltraCart", content)


def error_page(title: str, message: str) -> str:
    """A plain error page, for requests that cannot be redirected back to the application."""
    content = f'<h1>{escape(title)}</h1>\n<p id="error">{escape(message)}</p>'
    return _layout(f"{title} - UltraCart", content)
