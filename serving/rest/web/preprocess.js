// The client library's preprocessing of pictures (client/images.py), step for step, in the
// browser: find the ink (alpha or grey, either polarity), stretch its contrast, crop to the
// ink, fit into 20x20 keeping the aspect ratio (Pillow's Lanczos), centre the centre of mass in
// the 28x28 field, scale to [0, 1]. tests/integration/test_web_page.py runs this module on the
// pictures in client/samples/ and compares with client.images: within 1/255 per pixel.
//
// Why the arithmetic looks fussy: numpy computes on float32 arrays in float32 (a Python float
// beside one is rounded to float32 first), Pillow's "F" images are float32 and its resampler
// sums in double. Math.fround after each double operation gives the float32 result exactly
// (double rounding is harmless for + - * / of float32 operands), so the same steps give the same
// bits, and the same thresholds decide the same crop.

const f32 = Math.fround;

// Constants of client/images.py (the comparison test would catch a drift).
export const FIT_BOX = 20; // MNIST scaled each digit to fit a 20x20 box
export const MAX_SIDE = 1024; // larger pictures are reduced first
export const MIN_CONTRAST = 0.15; // ink vs paper difference below this is "no digit"
const VISIBLE = f32(0.02); // numpy compares a float32 array with float32(0.02)

/** A picture the preprocessing refuses (blank, too little contrast): a message for a person. */
export class NoDigitError extends Error {}

/** Python's round(): halves to even. */
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// --- Pillow's resampler (libImaging/Resample.c), Lanczos -----------------------------------------
function sinc(x) {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

function lanczos(x) {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/** precompute_coeffs(): for each output index, its first input index and normalised weights. */
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 3 * filterscale;
  const bounds = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = new Float64Array(Math.max(xmax, 0));
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = lanczos((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    if (ww !== 0) for (let x = 0; x < xmax; x++) k[x] /= ww;
    bounds.push({ min: xmin, k });
  }
  return bounds;
}

/**
 * Pillow's Image.resize(LANCZOS) of a float32 ("F") image: horizontal pass then vertical, each
 * summed in double and stored as float32. With `eightBit`, its 8-bit variant (fixed-point
 * weights, rounded and clipped to 0..255), for the large-picture reduction.
 */
export function resizeLanczos(src, width, height, newWidth, newHeight, eightBit = false) {
  const store = eightBit ? fixedPoint : (ss) => ss;
  const weight = eightBit ? fixed : (k) => k;
  const rows = coefficients(height, newHeight);
  let image = src;
  let first = 0; // the first source row the vertical pass reads
  if (newWidth !== width) {
    // Horizontal pass first, over the rows the vertical pass reads (as Pillow does).
    first = rows[0].min;
    const used = rows[newHeight - 1].min + rows[newHeight - 1].k.length - first;
    const cols = coefficients(width, newWidth).map(({ min, k }) => ({ min, k: k.map(weight) }));
    image = new Float32Array(newWidth * used);
    for (let y = 0; y < used; y++) {
      const row = (y + first) * width;
      for (let xx = 0; xx < newWidth; xx++) {
        const { min, k } = cols[xx];
        let ss = 0;
        for (let x = 0; x < k.length; x++) ss += src[row + min + x] * k[x];
        image[y * newWidth + xx] = store(ss);
      }
    }
  }
  if (newHeight === height) return image === src ? Float32Array.from(src) : image;
  const out = new Float32Array(newWidth * newHeight);
  for (let yy = 0; yy < newHeight; yy++) {
    const min = rows[yy].min - first;
    const k = rows[yy].k.map(weight);
    for (let x = 0; x < newWidth; x++) {
      let ss = 0;
      for (let y = 0; y < k.length; y++) ss += image[(min + y) * newWidth + x] * k[y];
      out[yy * newWidth + x] = store(ss);
    }
  }
  return out;
}

const PRECISION = 2 ** 22; // Resample.c's PRECISION_BITS = 32 - 8 - 2

function fixed(k) {
  return k < 0 ? Math.trunc(-0.5 + k * PRECISION) : Math.trunc(0.5 + k * PRECISION);
}

function fixedPoint(ss) {
  return Math.min(Math.max(Math.floor((ss + PRECISION / 2) / PRECISION), 0), 255);
}

/** Image.thumbnail()'s size for fitting into MAX_SIDE x MAX_SIDE, keeping the aspect ratio. */
export function thumbnailSize(width, height, side = MAX_SIDE) {
  if (side >= width && side >= height) return null;
  const aspect = width / height;
  const roundAspect = (n, key) => {
    const [low, high] = [Math.floor(n), Math.ceil(n)];
    return Math.max(key(low) <= key(high) ? low : high, 1);
  };
  if (aspect <= 1) { // Pillow's x / y >= aspect, with x = y = side
    return [roundAspect(side * aspect, (n) => Math.abs(aspect - n / side)), side];
  }
  return [side, roundAspect(side / aspect, (n) => (n === 0 ? 0 : Math.abs(aspect - side / n)))];
}

// --- client.images.ink_image and _stretched -------------------------------------------------------
/** numpy.median of float32 values: the middle one, or the float32 mean of the two middle ones. */
function median(values) {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  return n % 2 ? sorted[(n - 1) / 2] : f32(f32(sorted[n / 2 - 1] + sorted[n / 2]) / 2);
}

/** The strongest value after Pillow's 3x3 MedianFilter (edges replicated). */
function maxOfMedian3(grey, width, height) {
  let best = -Infinity;
  const window = new Float64Array(9);
  for (let y = 0; y < height; y++) {
    const rows = [Math.max(y - 1, 0), y, Math.min(y + 1, height - 1)];
    for (let x = 0; x < width; x++) {
      const cols = [Math.max(x - 1, 0), x, Math.min(x + 1, width - 1)];
      let i = 0;
      for (const r of rows) for (const c of cols) window[i++] = grey[r * width + c];
      window.sort();
      if (window[4] > best) best = window[4];
    }
  }
  return best;
}

/** Ink bright on black, paper at 0 and the strongest ink at 1 (background null: find it). */
export function stretched(grey, width, height, background = null) {
  if (grey.length === 0) throw new NoDigitError("the picture has no pixels");
  let values = grey;
  if (background === null) {
    // The paper is what the border shows: its median is robust to strokes touching the edge.
    const band = Math.max(1, Math.floor(Math.min(width, height) / 50));
    const border = [];
    for (let y = 0; y < band; y++) for (let x = 0; x < width; x++) border.push(grey[y * width + x]);
    for (let y = height - band; y < height; y++) for (let x = 0; x < width; x++) border.push(grey[y * width + x]);
    for (let y = 0; y < height; y++) for (let x = 0; x < band; x++) border.push(grey[y * width + x]);
    for (let y = 0; y < height; y++) for (let x = width - band; x < width; x++) border.push(grey[y * width + x]);
    background = median(border);
    if (background > 0.5) {
      // Light paper, dark ink: MNIST wants ink bright on black.
      values = grey.map((g) => f32(1 - g));
      background = 1 - background;
    }
  }
  const ink = maxOfMedian3(values, width, height);
  if (ink - background < MIN_CONTRAST) {
    throw new NoDigitError("no digit found: the picture is blank or has too little contrast");
  }
  const bg = f32(background);
  const span = f32(ink - background);
  return values.map((g) => Math.min(Math.max(f32(f32(g - bg) / span), 0), 1));
}

/**
 * client.images.ink_image for decoded RGBA pixels (what a canvas gives): a picture whose alpha
 * spans 0.5 is a drawing on a transparent canvas (its opaque strokes are the ink, whatever their
 * colour); any other is its grey levels (Pillow's convert("L")) with the polarity found.
 */
export function inkImage(rgba, width, height) {
  let alpha = new Float32Array(width * height);
  let grey = new Float32Array(width * height);
  for (let i = 0; i < width * height; i++) {
    const [r, g, b, a] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2], rgba[4 * i + 3]];
    alpha[i] = a; // bytes for now: the reduction below works on bytes, as Pillow's does
    grey[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16; // Pillow's RGB -> L
  }
  const size = thumbnailSize(width, height);
  if (size) {
    // Larger pictures are reduced to fit MAX_SIDE with Pillow's 8-bit Lanczos. Not bit-exact
    // for such pictures (Pillow first decodes a large JPEG at 1/2, 1/4 or 1/8 scale and reduces
    // by whole factors before Lanczos): their 28x28 may differ by a few grey levels.
    [alpha, grey] = [alpha, grey].map((c) => resizeLanczos(c, width, height, size[0], size[1], true));
    [width, height] = size;
  }
  let lo = 255;
  let hi = 0;
  for (const a of alpha) [lo, hi] = [Math.min(lo, a), Math.max(hi, a)];
  const scaled = (bytes) => bytes.map((v) => f32(v / 255));
  if (lo / 255 < 0.5 && 0.5 < hi / 255) {
    return { ink: stretched(scaled(alpha), width, height, 0), width, height };
  }
  return { ink: stretched(scaled(grey), width, height, null), width, height };
}

// --- client.images.preprocess_ink ------------------------------------------------------------------
/** Otsu's threshold of grey values in [0, 1] over 64 bins, as client.images computes it. */
export function otsuThreshold(values) {
  const bins = 64;
  const hist = new Float64Array(bins);
  for (const v of values) if (v >= 0 && v <= 1) hist[Math.min(Math.floor(v * bins), bins - 1)] += 1;
  const w0 = new Float64Array(bins);
  const m0 = new Float64Array(bins);
  let w = 0;
  let m = 0;
  for (let i = 0; i < bins; i++) {
    w += hist[i];
    m += hist[i] * ((2 * i + 1) / (2 * bins));
    w0[i] = w;
    m0[i] = m;
  }
  let best = -Infinity;
  let arg = 0;
  for (let i = 0; i < bins; i++) {
    const w1 = w0[bins - 1] - w0[i];
    const d = m0[i] / w0[i] - (m0[bins - 1] - m0[i]) / w1;
    let between = w0[i] * w1 * (d * d);
    if (Number.isNaN(between)) between = 0; // numpy.nan_to_num
    else if (between === Infinity) between = Number.MAX_VALUE;
    else if (between === -Infinity) between = -Number.MAX_VALUE;
    if (between > best) [best, arg] = [between, i];
  }
  return (arg + 1) / bins;
}

/** Ink-bright grey [H, W] in [0, 1] -> the MNIST field (size x size, row-major Float32Array). */
export function preprocessInk(ink, width, height, size) {
  // Otsu's split finds the ink: the digit's box is where ink is above it, and half of it is the
  // floor below which a pixel is paper (so strokes keep their soft edges).
  const visible = ink.filter((v) => v > VISIBLE);
  const threshold = visible.length > 1 ? otsuThreshold(visible) : 0.5;
  const floor = threshold / 2;
  const [fl, span] = [f32(floor), f32(1 - floor)];
  let [top, bottom, left, right] = [height, -1, width, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (ink[y * width + x] > threshold) {
        [top, bottom] = [Math.min(top, y), Math.max(bottom, y)];
        [left, right] = [Math.min(left, x), Math.max(right, x)];
      }
    }
  }
  if (bottom < 0) throw new NoDigitError("no digit found after removing the background");
  const [cropW, cropH] = [right - left + 1, bottom - top + 1];
  const crop = new Float32Array(cropW * cropH);
  for (let y = 0; y < cropH; y++) {
    for (let x = 0; x < cropW; x++) {
      const v = ink[(y + top) * width + x + left];
      crop[y * cropW + x] = Math.min(Math.max(f32(f32(v - fl) / span), 0), 1);
    }
  }

  const scale = FIT_BOX / Math.max(cropW, cropH);
  const newW = Math.max(1, roundHalfEven(cropW * scale));
  const newH = Math.max(1, roundHalfEven(cropH * scale));
  const patch = resizeLanczos(crop, cropW, cropH, newW, newH).map((v) => Math.max(v, 0));

  let [total, sumY, sumX] = [0, 0, 0];
  for (let y = 0; y < newH; y++) {
    for (let x = 0; x < newW; x++) {
      const v = patch[y * newW + x];
      total += v;
      sumY += y * v;
      sumX += x * v;
    }
  }
  if (total <= 0) throw new NoDigitError("no digit found after scaling");
  // Integer shift, as MNIST did; clamped so the patch stays whole inside the field.
  const centre = size / 2;
  const shiftY = Math.min(Math.max(roundHalfEven(centre - sumY / total), 0), size - newH);
  const shiftX = Math.min(Math.max(roundHalfEven(centre - sumX / total), 0), size - newW);
  const field = new Float32Array(size * size);
  let peak = 0;
  for (let y = 0; y < newH; y++) {
    for (let x = 0; x < newW; x++) {
      const v = patch[y * newW + x];
      field[(y + shiftY) * size + x + shiftX] = v;
      peak = Math.max(peak, v);
    }
  }
  return peak > 0 ? field.map((v) => Math.min(Math.max(f32(v / peak), 0), 1)) : field;
}

/** Decoded RGBA pixels of one digit (any size, either polarity) -> the model's size x size input. */
export function preprocessRGBA(rgba, width, height, size) {
  const { ink, width: w, height: h } = inkImage(rgba, width, height);
  return preprocessInk(ink, w, h, size);
}

/**
 * A picture file (PNG, JPEG, WebP, GIF...) -> its decoded RGBA pixels, as Pillow would see them:
 * rotated by its EXIF orientation, without colour management (Pillow ignores ICC profiles).
 */
export async function decodePicture(blob) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      imageOrientation: "from-image",
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
  } catch {
    throw new NoDigitError("not a picture the browser can decode (PNG, JPEG, WebP, GIF...)");
  }
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { rgba: context.getImageData(0, 0, width, height).data, width, height };
}

/** A picture file -> the model's size x size input (Float32Array, row-major, values in [0, 1]). */
export async function preprocessPicture(blob, size) {
  const { rgba, width, height } = await decodePicture(blob);
  return preprocessRGBA(rgba, width, height, size);
}
