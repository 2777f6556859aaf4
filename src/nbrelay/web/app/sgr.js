// The colours and emphasis of SGR sequences ("\x1b[1;31m"), as class names the page's style sheet draws: the 16
// colours of a terminal (the 256-colour and 24-bit forms are shown as the nearest of them: the page's policy
// lets it style nothing inline), bold, faint, italic and underline.

// xterm's 16 colours, to find the nearest one to a 256-colour or 24-bit colour.
const PALETTE = [
  [0, 0, 0], [205, 0, 0], [0, 205, 0], [205, 205, 0], [0, 0, 238], [205, 0, 205], [0, 205, 205], [229, 229, 229],
  [127, 127, 127], [255, 0, 0], [0, 255, 0], [255, 255, 0], [92, 92, 255], [255, 0, 255], [0, 255, 255],
  [255, 255, 255],
];
const CUBE = [0, 95, 135, 175, 215, 255];

/** The nearest of the 16 colours to an RGB one. */
export function nearest([r, g, b]) {
  let best = 0;
  let bestDistance = Infinity;
  PALETTE.forEach(([pr, pg, pb], i) => {
    const distance = (r - pr) ** 2 + (g - pg) ** 2 + (b - pb) ** 2;
    if (distance < bestDistance) [best, bestDistance] = [i, distance];
  });
  return best;
}

/** One of the 256 colours of "38;5;n" as one of the 16. */
function from256(n) {
  if (n < 16) return n;
  if (n < 232) {
    const i = n - 16;
    return nearest([CUBE[Math.floor(i / 36)], CUBE[Math.floor(i / 6) % 6], CUBE[i % 6]]);
  }
  const grey = 8 + 10 * (n - 232);
  return nearest([grey, grey, grey]);
}

const byte = (value) => Number.isInteger(value) && value >= 0 && value <= 255;

/** The attributes SGR sets; `className` is what a run of text printed with them is drawn with ("" for none). */
export class Pen {
  constructor() {
    this.reset();
  }

  reset() {
    this.fg = null;
    this.bg = null;
    this.bold = false;
    this.faint = false;
    this.italic = false;
    this.underline = false;
    this.className = "";
  }

  /** Apply the parameters of one SGR sequence (the text between "\x1b[" and "m"). */
  apply(parameters) {
    const codes = parameters === "" ? [0] : parameters.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
    for (let i = 0; i < codes.length; i += 1) {
      const code = codes[i];
      if (code === 0) this.reset();
      else if (code === 1) this.bold = true;
      else if (code === 2) this.faint = true;
      else if (code === 3) this.italic = true;
      else if (code === 4) this.underline = true;
      else if (code === 22) this.bold = this.faint = false;
      else if (code === 23) this.italic = false;
      else if (code === 24) this.underline = false;
      else if (code >= 30 && code <= 37) this.fg = code - 30;
      else if (code >= 90 && code <= 97) this.fg = code - 90 + 8;
      else if (code === 39) this.fg = null;
      else if (code >= 40 && code <= 47) this.bg = code - 40;
      else if (code >= 100 && code <= 107) this.bg = code - 100 + 8;
      else if (code === 49) this.bg = null;
      else if (code === 38 || code === 48) {
        const [colour, used] = extended(codes, i + 1);
        i += used;
        if (colour !== null) this[code === 38 ? "fg" : "bg"] = colour;
      }
    }
    this.className = [
      this.fg !== null && `ansi-fg-${this.fg}`,
      this.bg !== null && `ansi-bg-${this.bg}`,
      this.bold && "ansi-bold",
      this.faint && "ansi-faint",
      this.italic && "ansi-italic",
      this.underline && "ansi-underline",
    ]
      .filter(Boolean)
      .join(" ");
  }
}

/** The colour of "38;5;n" or "38;2;r;g;b" whose form starts at codes[at], and how many codes it took. */
function extended(codes, at) {
  if (codes[at] === 5) return [byte(codes[at + 1]) ? from256(codes[at + 1]) : null, 2];
  if (codes[at] === 2) {
    const rgb = codes.slice(at + 1, at + 4);
    return [rgb.length === 3 && rgb.every(byte) ? nearest(rgb) : null, 4];
  }
  return [null, codes.length - at]; // a form not known: what follows cannot be read
}
