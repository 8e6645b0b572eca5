/*
 * CPU kernel of msrcnn.evaluation.encode_roi_masks: binarise each mask crop and write its COCO
 * RLE string in one pass, without building the image-size mask.
 *
 * Python calls it (never directly) with the crops of msrcnn.ops.paste.resize_masks_into_boxes:
 * per mask, the float32 values of the resized mask that lie inside the image ([h, w], any
 * strides) and their offset (y0, x0) in the H x W image; every other pixel of the image is
 * background. A pixel is foreground when value > threshold (the threshold rounded to float32 first,
 * as a comparison of a float32 tensor with a Python float does).
 *
 * COCO RLE: run lengths over the image in column-major order, alternating background and
 * foreground, starting with background (a run of 0 when pixel 0 is foreground); compressed to a
 * string by storing each count (after the first two: minus the count two places earlier) in
 * groups of 5 bits, least significant first, each group as the character 48 + its bits, with
 * bit 0x20 set when more groups follow (the format of the COCO API's rleToString).
 *
 * Built by `make install` (tools/build_kernels.py) and by `pip install`; when it is absent,
 * records.py finds the runs with NumPy, which gives the same strings.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t *data;
    Py_ssize_t size, capacity;
} Counts;

static int counts_push(Counts *c, int64_t value) {
    if (c->size == c->capacity) {
        Py_ssize_t capacity = c->capacity ? 2 * c->capacity : 1024;
        int64_t *data = (int64_t *)realloc(c->data, (size_t)capacity * sizeof(int64_t));
        if (data == NULL) {
            return -1;
        }
        c->data = data;
        c->capacity = capacity;
    }
    c->data[c->size++] = value;
    return 0;
}

#define TILE 16 /* columns binarised together: their values are read row by row, in cache order */

/* The run lengths of one crop placed at (y0, x0) in an H x W image. `tile` has room for TILE * h
 * bytes. Returns 0, or -1 on no memory. */
static int crop_runs(const char *buf, Py_ssize_t h, Py_ssize_t w, Py_ssize_t stride_y,
                     Py_ssize_t stride_x, int64_t y0, int64_t x0, int64_t height, int64_t area,
                     float threshold, unsigned char *tile, Counts *out) {
    out->size = 0;
    int64_t last_change = 0; /* image position where the current run started */
    int64_t next = -1;       /* position just after the pixel visited last (-1: none yet) */
    int current = 0;         /* value of the current run */
    for (Py_ssize_t xb = 0; xb < w; xb += TILE) {
        const Py_ssize_t nb = w - xb < TILE ? w - xb : TILE;
        /* binarise TILE columns, reading each row's values in order, into column-major bytes */
        for (Py_ssize_t y = 0; y < h; y++) {
            const char *row = buf + y * stride_y + xb * stride_x;
            for (Py_ssize_t c = 0; c < nb; c++) {
                tile[c * h + y] = *(const float *)(row + c * stride_x) > threshold;
            }
        }
        for (Py_ssize_t c = 0; c < nb; c++) {
            const int64_t base = (x0 + xb + c) * height + y0; /* image position of the column's top */
            if (current && base != next) { /* background pixels since the last column: a run ends */
                if (counts_push(out, next - last_change)) return -1;
                last_change = next;
                current = 0;
            }
            const unsigned char *column = tile + c * h;
            Py_ssize_t y = 0;
            while (y < h) {
                /* skip pixels equal to the current run's value, eight at a time where possible */
                const uint64_t same = current ? 0x0101010101010101ULL : 0;
                while (y + 8 <= h) {
                    uint64_t word;
                    memcpy(&word, column + y, 8);
                    if (word != same) break;
                    y += 8;
                }
                while (y < h && column[y] == current) y++;
                if (y < h) { /* a change at pixel y */
                    if (counts_push(out, base + y - last_change)) return -1;
                    last_change = base + y;
                    current = !current;
                }
            }
            next = base + h;
        }
    }
    if (current && next < area) { /* foreground ends before the image does */
        if (counts_push(out, next - last_change)) return -1;
        last_change = next;
    }
    return counts_push(out, area - last_change); /* the final run */
}

/* The mask's area (its foreground pixels) and its box [x, y, w, h] as the COCO API's toBbox gives
 * it (a foreground run that crosses a column boundary widens the box to the full image height). */
static void area_and_box(const Counts *c, int64_t height, double *area, double *box) {
    int64_t total = 0;
    for (Py_ssize_t j = 1; j < c->size; j += 2) {
        total += c->data[j];
    }
    *area = (double)total;
    const Py_ssize_t m = (c->size / 2) * 2; /* the runs up to the last foreground one */
    if (m == 0) {
        box[0] = box[1] = box[2] = box[3] = 0.0;
        return;
    }
    int64_t xs = INT64_MAX, ys = INT64_MAX, xe = 0, ye = 0, xp = 0, cc = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        cc += c->data[j];
        const int64_t t = cc - (j % 2); /* first pixel of a foreground run, or last of one */
        const int64_t y = t % height, x = t / height;
        if (j % 2 == 0) {
            xp = x;
        } else if (xp < x) {
            ys = 0;
            ye = height - 1;
        }
        xs = x < xs ? x : xs;
        xe = x > xe ? x : xe;
        ys = y < ys ? y : ys;
        ye = y > ye ? y : ye;
    }
    box[0] = (double)xs;
    box[1] = (double)ys;
    box[2] = (double)(xe - xs + 1);
    box[3] = (double)(ye - ys + 1);
}

/* The COCO string of run lengths `c`, written to `s` (room for 7 characters per count). */
static Py_ssize_t compress(const Counts *c, char *s) {
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < c->size; i++) {
        long long x = c->data[i];
        if (i > 2) {
            x -= c->data[i - 2];
        }
        int more = 1;
        while (more) {
            int group = (int)(x & 0x1f);
            x >>= 5; /* arithmetic shift: negative differences end in a run of ones */
            more = (group & 0x10) ? x != -1 : x != 0;
            if (more) {
                group |= 0x20;
            }
            s[n++] = (char)(group + 48);
        }
    }
    return n;
}

/* encode_crops(crops, height, width, threshold, areas, boxes) -> list of str
 *
 * crops: a sequence of K (y0, x0, values) with values a 2-D float32 buffer (a NumPy array);
 * areas: float64 [K] and boxes: float64 [K, 4], written: what the COCO API's area and toBbox
 * give for each RLE. */
static PyObject *py_encode_crops(PyObject *self, PyObject *args) {
    PyObject *crops;
    Py_ssize_t height, width;
    double threshold;
    Py_buffer areas, boxes;
    if (!PyArg_ParseTuple(args, "Onndw*w*", &crops, &height, &width, &threshold, &areas, &boxes)) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(crops, "encode_crops: crops must be a sequence");
    if (seq == NULL) {
        PyBuffer_Release(&areas);
        PyBuffer_Release(&boxes);
        return NULL;
    }
    const Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL;
    Counts counts = {NULL, 0, 0};
    char *text = NULL;
    Py_ssize_t text_capacity = 0;
    unsigned char *tile = NULL;
    Py_ssize_t tile_capacity = 0;
    const int64_t area = (int64_t)height * (int64_t)width;
    const float thr = (float)threshold;
    if (height <= 0 || width <= 0) {
        PyErr_Format(PyExc_ValueError, "encode_crops: image size %zd x %zd is empty", height, width);
        goto fail;
    }
    if (areas.len != k * (Py_ssize_t)sizeof(double) || boxes.len != 4 * k * (Py_ssize_t)sizeof(double)) {
        PyErr_Format(PyExc_ValueError, "encode_crops: expected areas float64 [%zd] and boxes float64 [%zd, 4]", k, k);
        goto fail;
    }
    result = PyList_New(k);
    if (result == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t y0, x0;
        PyObject *values;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "nnO;encode_crops: each crop is (y0, x0, values)",
                              &y0, &x0, &values)) {
            goto fail;
        }
        Py_buffer view;
        if (PyObject_GetBuffer(values, &view, PyBUF_STRIDED_RO | PyBUF_FORMAT) != 0) {
            goto fail;
        }
        if (view.ndim != 2 || view.itemsize != 4 || view.format == NULL || strcmp(view.format, "f") != 0) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError, "encode_crops: crop %zd: expected 2-D float32 values", i);
            goto fail;
        }
        const Py_ssize_t h = view.shape[0], w = view.shape[1];
        if (h > 0 && w > 0 && (y0 < 0 || x0 < 0 || y0 + h > height || x0 + w > width)) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError,
                         "encode_crops: crop %zd of %zd x %zd at (%zd, %zd) leaves the %zd x %zd image", i,
                         h, w, y0, x0, height, width);
            goto fail;
        }
        if (TILE * h > tile_capacity) {
            tile_capacity = TILE * h;
            unsigned char *grown = (unsigned char *)realloc(tile, (size_t)tile_capacity);
            if (grown == NULL) {
                PyBuffer_Release(&view);
                PyErr_NoMemory();
                goto fail;
            }
            tile = grown;
        }
        int status;
        Py_BEGIN_ALLOW_THREADS
        status = crop_runs((const char *)view.buf, h, w, view.strides[0], view.strides[1], y0, x0, height,
                           area, thr, tile, &counts);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&view);
        if (status != 0) {
            PyErr_NoMemory();
            goto fail;
        }
        area_and_box(&counts, height, (double *)areas.buf + i, (double *)boxes.buf + 4 * i);
        if (7 * counts.size > text_capacity) {
            text_capacity = 7 * counts.size;
            char *grown = (char *)realloc(text, (size_t)text_capacity);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            text = grown;
        }
        PyObject *string = PyUnicode_FromStringAndSize(text, compress(&counts, text));
        if (string == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(result, i, string);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    free(counts.data);
    free(text);
    free(tile);
    Py_DECREF(seq);
    PyBuffer_Release(&areas);
    PyBuffer_Release(&boxes);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_crops", py_encode_crops, METH_VARARGS,
     "COCO RLE strings of mask crops (internal; use msrcnn.evaluation.encode_roi_masks)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rle_cpu", "CPU kernel of msrcnn.evaluation.encode_roi_masks (internal).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__rle_cpu(void) { return PyModule_Create(&module); }
