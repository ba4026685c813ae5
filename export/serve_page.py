"""The page `export.serve` shows at `/` (pick an image, see it drawn and the JSON),
and the drawing of a prediction.

Everything is inline (no script, style or font is fetched), so the page works on a
machine without internet. The picked file is POSTed twice as the raw request body:
to `/predict?draw=1` (the drawn PNG, shown) and to `/predict` (the JSON, shown as a
summary per head and in full). `draw_result` makes that drawn image.
"""
import html
import io
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from data_pipelines.draw import scalable_font

COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180))
MIN_SIDE = 400  # smaller images are drawn enlarged

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>effdet_tf serving: __MODEL__</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
        background: #f4f5f7; color: #1d2330; }
 header { background: #1d2330; color: #fff; padding: 14px 24px; }
 header h1 { font-size: 20px; margin: 0; }
 header span { color: #9fb3c8; font-size: 14px; }
 main { padding: 20px 24px; display: grid; gap: 20px;
        grid-template-columns: minmax(300px, 1.2fr) minmax(300px, 1fr); }
 .card { background: #fff; border-radius: 8px; padding: 16px;
         box-shadow: 0 1px 3px rgba(0, 0, 0, .12); }
 .card h2 { font-size: 16px; margin: 0 0 10px; }
 #picker { grid-column: 1 / -1; display: flex; align-items: center; gap: 16px; }
 label.button { background: #2563eb; color: #fff; padding: 8px 16px; border-radius: 6px;
                cursor: pointer; font-weight: 600; }
 input[type=file] { display: none; }
 #status { color: #555; }
 #status.error { color: #b91c1c; font-weight: 600; }
 #result-image { width: 100%; height: auto; border-radius: 4px; display: none; }
 table { border-collapse: collapse; width: 100%; margin-bottom: 12px; font-size: 14px; }
 th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e5e7eb; }
 th { background: #f9fafb; }
 h3 { font-size: 14px; margin: 12px 0 6px; }
 .kind { color: #6b7280; font-weight: normal; }
 pre { background: #0f172a; color: #e2e8f0; padding: 12px; border-radius: 6px;
       max-height: 320px; overflow: auto; font-size: 12px; }
</style>
</head>
<body>
<header><h1>effdet_tf serving <span>model __MODEL__</span></h1></header>
<main>
 <div class="card" id="picker">
  <label class="button" for="file">Choose an image</label>
  <input type="file" id="file" accept="image/*">
  <span id="status">JPEG or PNG; it is sent to /predict.</span>
 </div>
 <div class="card"><h2>Drawn result</h2><img id="result-image" alt="prediction"></div>
 <div class="card"><h2>Predictions</h2><div id="summary"></div>
  <pre id="result-json"></pre></div>
</main>
<script>
"use strict";
const fileInput = document.getElementById("file");
const statusLine = document.getElementById("status");

function cell(row, text, header) {
  const td = document.createElement(header ? "th" : "td");
  td.textContent = text;
  row.appendChild(td);
}

function table(titles, rows) {
  const t = document.createElement("table");
  const head = t.insertRow();
  titles.forEach((x) => cell(head, x, true));
  rows.forEach((r) => { const tr = t.insertRow(); r.forEach((x) => cell(tr, x, false)); });
  if (!rows.length) { const tr = t.insertRow(); cell(tr, "(none)", false); }
  return t;
}

function summarise(result) {
  const box = document.getElementById("summary");
  box.replaceChildren();
  for (const [head, entry] of Object.entries(result)) {
    const title = document.createElement("h3");
    title.textContent = head + " ";
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = "(" + entry.kind + ")";
    title.appendChild(kind);
    box.appendChild(title);
    const p = (x) => x.toFixed(3);
    if (entry.kind === "detection") {
      box.appendChild(table(["class", "score", "box x0, y0, x1, y1"], entry.detections.map(
        (d) => [d.class, p(d.score), d.box.map((v) => v.toFixed(1)).join(", ")])));
    } else if (entry.kind === "classification") {
      box.appendChild(table(["class", "probability"],
                            entry.top_k.map((t) => [t.class, p(t.probability)])));
    } else if (entry.kind === "multilabel") {
      box.appendChild(table(["tag", "probability"],
                            entry.tags.map((t) => [t.tag, p(t.probability)])));
    }
  }
}

async function post(url, file) {
  const response = await fetch(url, {method: "POST", body: file,
    headers: {"Content-Type": file.type || "application/octet-stream"}});
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

fileInput.addEventListener("change", async () => {
  const file = fileInput.files[0];
  if (!file) { return; }
  statusLine.className = "";
  statusLine.textContent = "Predicting " + file.name + " ...";
  try {
    const [drawn, json] = await Promise.all([post("predict?draw=1", file),
                                             post("predict?probabilities=1", file)]);
    const image = document.getElementById("result-image");
    image.src = URL.createObjectURL(await drawn.blob());
    image.style.display = "block";
    const result = await json.json();
    summarise(result);
    document.getElementById("result-json").textContent = JSON.stringify(result, null, 1);
    statusLine.textContent = file.name + ": done";
  } catch (err) {
    statusLine.className = "error";
    statusLine.textContent = "Error: " + err.message;
  }
});
</script>
</body>
</html>
"""


def render_page(model_name: str) -> str:
    """The page with the model's name filled in (HTML-escaped).

    Args:
        model_name: the name the server serves the model under.

    Returns:
        The HTML text.
    """
    return PAGE.replace("__MODEL__", html.escape(model_name))


def label_lines(result: Dict[str, Any]) -> List[str]:
    """One text line per classification / multilabel head of an `image_result`."""
    lines = []
    for head, entry in result.items():
        if entry["kind"] == "classification":
            items = [f"{t['class']} {t['probability']:.2f}" for t in entry["top_k"]]
        elif entry["kind"] == "multilabel":
            items = [f"{t['tag']} {t['probability']:.2f}" for t in entry["tags"]] or ["(none)"]
        else:
            continue
        lines.append(f"{head}: " + ", ".join(items))
    return lines


def draw_result(image: np.ndarray, result: Dict[str, Any], fmt: str = "png") -> Tuple[bytes, str]:
    """Draws an `image_result`: boxes labelled with class and score in their head's colour,
    the classification and multilabel heads' labels in a strip under the image. Images
    under `MIN_SIDE` pixels are enlarged by a whole factor first, so labels stay legible.

    Args:
        image: RGB uint8 `[H, W, 3]` (the decoded input).
        result: its `image_result`.
        fmt: "png" or "jpeg".

    Returns:
        `(encoded bytes, media type)`.
    """
    picture = Image.fromarray(image)
    zoom = max(1, MIN_SIDE // max(picture.size))
    picture = picture.resize((picture.width * zoom, picture.height * zoom),
                             Image.Resampling.NEAREST)
    size = max(12, round(max(picture.size) / 45))
    font = scalable_font(size)
    lines = label_lines(result)
    width = max([picture.width] + [int(font.getlength(t)) + 12 for t in lines])
    canvas = Image.new("RGB", (width, picture.height + (size + 8) * len(lines) + 6), "white")
    canvas.paste(picture, (0, 0))
    pen = ImageDraw.Draw(canvas)
    line = max(2, round(max(picture.size) / 250))
    for i, (head, entry) in enumerate(result.items()):
        colour = COLOURS[i % len(COLOURS)]
        for det in sorted(entry.get("detections", []), key=lambda d: d["score"]):
            x1, y1, x2, y2 = (v * zoom for v in det["box"])
            pen.rectangle([x1, y1, x2, y2], outline=colour, width=line)
            text = f"{head}:{det['class']} {det['score']:.2f}"
            left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
            x_text = min(x1, max(0.0, picture.width - (right - left) - 4))
            y_text = max(0.0, y1 - (bottom - top) - 4)
            pen.rectangle([x_text, y_text, x_text + right - left + 4, y_text + bottom - top + 4],
                          fill=colour)
            pen.text((x_text + 2, y_text + 2 - top), text, fill="white", font=font)
    for i, text in enumerate(lines):
        pen.text((6, picture.height + 5 + i * (size + 8)), text, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG" if fmt == "jpeg" else "PNG")
    return buffer.getvalue(), "image/jpeg" if fmt == "jpeg" else "image/png"
