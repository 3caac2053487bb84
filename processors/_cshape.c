/*
 * processors._cshape: the fast path of processors.shapes.shape_of, compiled.
 *
 * A line-for-line port of processors/_fastshape.py (read that first): it shapes trees of exact builtins
 * (str, int, float, bool, None, dict, list, tuple, set, frozenset, and the scalar types the caller
 * passes in) and gives up at anything else, or at a bound that would truncate, by returning NULL to the
 * top level, which then runs the general walk (a Python callable) on the whole value. So where this
 * answers, it answers exactly what the Python fast path answers; tests/processors/test_cshape.py checks
 * that on generated values.
 *
 * Safety: it never calls a user's code. Values are read through exact builtin types only; the callables
 * it calls (emittable, tag, scalars, general) are the library's own. References are owned while in use,
 * so a dict changed by another thread while a callback runs cannot free what is being read; a dict
 * whose size changed makes this give up, as Python's own iteration would. Recursion goes through
 * Py_EnterRecursiveCall, so a deep value raises RecursionError here (and the general walk decides).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <time.h>

static PyObject *K_t, *K_len, *K_n, *K_keys, *K_hidden, *K_truncated, *K_items, *K_types;
static PyObject *V_str, *V_int, *V_obj, *V_arr, *V_float, *V_bool, *V_null, *V_mixed;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t max_depth, max_keys, max_items, max_len, top_work, check_len;
    PyObject *max_len_obj; /* max_len as an int, for emittable(key, max_len) */
    PyObject *general;     /* (value, limits) -> shape, never raises */
    PyObject *emittable;   /* (key, max_len) -> bool */
    PyObject *tag;         /* (type) -> str */
    PyObject *scalars;     /* dict: type -> (value) -> shape */
    PyObject *accepted;    /* dict: accepted keys (read only here) */
    PyObject *limits;      /* passed to general */
    PyObject *stamp_key;   /* the interned "timestamp": kept by fields() when in the pipeline's format */
    PyObject *fragment;    /* orjson.Fragment, or NULL: render_fields() wraps rendered JSON in it */
    /* render_fields' shapes of scalar fields, made on first use and shared (a Fragment is immutable):
     * int, float, bool, null, then str of length 0..STR_CACHED-1 */
    PyObject *scalar_frags[4 + 256]; /* 4 + STR_CACHED */
} Shaper;

#define STR_CACHED 256

static PyObject *one(Shaper *s, PyObject *v, Py_ssize_t depth, Py_ssize_t *budget);
static int emittable(Shaper *s, PyObject *key);

/* Templates copied for each shape: copying a small dict clones its key table, cheaper than building it. */
static PyObject *T_str, *T_int, *T_float, *T_bool, *T_null, *T_obj, *T_arr, *T_mixed;

/* {"t": tag}: a new dict from its template */
static PyObject *
tagged(PyObject *tmpl)
{
    return PyDict_Copy(tmpl);
}

/* {"t": tag, key: n}: the template holds both keys; n replaces its placeholder */
static PyObject *
tagged_n(PyObject *tmpl, PyObject *key, Py_ssize_t n)
{
    PyObject *d = PyDict_Copy(tmpl);
    if (d == NULL)
        return NULL;
    PyObject *num = PyLong_FromSsize_t(n);
    if (num == NULL || PyDict_SetItem(d, key, num) < 0) {
        Py_XDECREF(num);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(num);
    return d;
}

static PyObject *
template(PyObject *tag, PyObject *key)
{
    PyObject *d = PyDict_New();
    if (d == NULL || PyDict_SetItem(d, K_t, tag) < 0 || (key != NULL && PyDict_SetItem(d, key, Py_None) < 0)) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *
obj(Shaper *s, PyObject *v, Py_ssize_t depth, Py_ssize_t *budget)
{
    Py_ssize_t n = PyDict_GET_SIZE(v);
    if (n == 0)
        return tagged_n(T_obj, K_n, 0);
    Py_ssize_t work = *budget;
    if (depth >= s->max_depth || work <= 0)
        return NULL; /* give up: the general walk truncates */
    if (Py_EnterRecursiveCall(" while shaping a value"))
        return NULL;
    PyObject *keys = PyDict_New();
    PyObject *out = NULL;
    Py_ssize_t hidden = 0, pos = 0, seen = 0;
    PyObject *key, *value;
    if (keys == NULL)
        goto done;
    while (seen < s->max_keys && PyDict_Next(v, &pos, &key, &value)) {
        seen++;
        if (work <= 0)
            goto fail;
        work--;
        Py_INCREF(key);
        Py_INCREF(value);
        int ok = emittable(s, key);
        if (ok < 0 || PyDict_GET_SIZE(v) != n) /* changed under us (another thread): give up */
            goto fail_kv;
        if (ok) {
            PyObject *shape;
            if (PyUnicode_CheckExact(value)) {
                shape = tagged_n(T_str, K_len, PyUnicode_GET_LENGTH(value));
            }
            else if (PyLong_CheckExact(value)) {
                shape = tagged(T_int);
            }
            else {
                *budget = work;
                shape = PyDict_CheckExact(value) ? obj(s, value, depth + 1, budget)
                                                 : one(s, value, depth + 1, budget);
                work = *budget;
            }
            if (shape == NULL)
                goto fail_kv;
            int rc = PyDict_SetItem(keys, key, shape);
            Py_DECREF(shape);
            if (rc < 0)
                goto fail_kv;
        }
        else {
            hidden++;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        continue;
    fail_kv:
        Py_DECREF(key);
        Py_DECREF(value);
        goto fail;
    }
    if (PyDict_GET_SIZE(v) != n)
        goto fail;
    *budget = work;
    out = tagged_n(T_obj, K_n, n);
    if (out == NULL)
        goto done;
    if (PyDict_GET_SIZE(keys) && PyDict_SetItem(out, K_keys, keys) < 0)
        goto fail;
    if (hidden) {
        PyObject *h = PyLong_FromSsize_t(hidden);
        if (h == NULL || PyDict_SetItem(out, K_hidden, h) < 0) {
            Py_XDECREF(h);
            goto fail;
        }
        Py_DECREF(h);
    }
    if (n > s->max_keys && PyDict_SetItem(out, K_truncated, Py_True) < 0)
        goto fail;
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(keys);
    Py_LeaveRecursiveCall();
    return out;
}

/* sample: a new list or tuple of at most max_items items of v (n = len(v) > 0) */
static PyObject *
arr(Shaper *s, Py_ssize_t n, PyObject *sample, Py_ssize_t depth, Py_ssize_t *budget)
{
    Py_ssize_t work = *budget;
    if (depth >= s->max_depth || work <= 0)
        return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(sample);
    PyObject **items = PySequence_Fast_ITEMS(sample);
    *budget = work - m;
    PyTypeObject *tp = Py_TYPE(items[0]);
    for (Py_ssize_t i = 1; i < m; i++) {
        if (Py_TYPE(items[i]) != tp) {
            PyObject *tags = PyList_New(0);
            if (tags == NULL)
                return NULL;
            for (Py_ssize_t j = 0; j < m; j++) {
                PyObject *t = PyObject_CallOneArg(s->tag, (PyObject *)Py_TYPE(items[j]));
                if (t == NULL) {
                    Py_DECREF(tags);
                    return NULL;
                }
                int has = PySequence_Contains(tags, t);
                if (has < 0 || (!has && PyList_Append(tags, t) < 0)) {
                    Py_DECREF(t);
                    Py_DECREF(tags);
                    return NULL;
                }
                Py_DECREF(t);
            }
            PyObject *mixed = tagged(T_mixed);
            if (mixed == NULL || PyDict_SetItem(mixed, K_types, tags) < 0) {
                Py_XDECREF(mixed);
                Py_DECREF(tags);
                return NULL;
            }
            Py_DECREF(tags);
            PyObject *out = tagged_n(T_arr, K_len, n);
            if (out == NULL || PyDict_SetItem(out, K_items, mixed) < 0) {
                Py_XDECREF(out);
                Py_DECREF(mixed);
                return NULL;
            }
            Py_DECREF(mixed);
            return out;
        }
    }
    if (Py_EnterRecursiveCall(" while shaping a value"))
        return NULL;
    PyObject *inner = one(s, items[0], depth + 1, budget);
    Py_LeaveRecursiveCall();
    if (inner == NULL)
        return NULL;
    PyObject *out = tagged_n(T_arr, K_len, n);
    if (out == NULL || PyDict_SetItem(out, K_items, inner) < 0) {
        Py_XDECREF(out);
        Py_DECREF(inner);
        return NULL;
    }
    Py_DECREF(inner);
    return out;
}

/* list/tuple: v[:max_items]; set/frozenset: list(islice(v, max_items)) */
static PyObject *
sequence(Shaper *s, PyObject *v, Py_ssize_t depth, Py_ssize_t *budget)
{
    Py_ssize_t n = PyObject_Length(v);
    if (n < 0)
        return NULL;
    if (n == 0)
        return tagged_n(T_arr, K_len, 0);
    PyObject *sample;
    if (PyList_CheckExact(v))
        sample = PyList_GetSlice(v, 0, s->max_items);
    else if (PyTuple_CheckExact(v))
        sample = PyTuple_GetSlice(v, 0, s->max_items);
    else {
        sample = PyList_New(0);
        PyObject *it = sample == NULL ? NULL : PyObject_GetIter(v);
        if (it == NULL) {
            Py_XDECREF(sample);
            return NULL;
        }
        PyObject *item;
        while (PyList_GET_SIZE(sample) < s->max_items && (item = PyIter_Next(it)) != NULL) {
            int rc = PyList_Append(sample, item);
            Py_DECREF(item);
            if (rc < 0)
                break;
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) {
            Py_DECREF(sample);
            return NULL;
        }
    }
    if (sample == NULL)
        return NULL;
    PyObject *out = NULL;
    if (PySequence_Fast_GET_SIZE(sample) == 0) /* emptied under us (another thread): give up */
        PyErr_SetString(PyExc_RuntimeError, "container changed while shaping");
    else
        out = arr(s, n, sample, depth, budget);
    Py_DECREF(sample);
    return out;
}

static PyObject *
one(Shaper *s, PyObject *v, Py_ssize_t depth, Py_ssize_t *budget)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (tp == &PyUnicode_Type)
        return tagged_n(T_str, K_len, PyUnicode_GET_LENGTH(v));
    if (tp == &PyLong_Type)
        return tagged(T_int);
    if (tp == &PyDict_Type)
        return obj(s, v, depth, budget);
    if (tp == &PyList_Type || tp == &PyTuple_Type)
        return sequence(s, v, depth, budget);
    if (tp == &PyFloat_Type)
        return tagged(T_float);
    if (tp == &PyBool_Type)
        return tagged(T_bool);
    if (v == Py_None)
        return tagged(T_null);
    PyObject *scalar = PyDict_GetItemWithError(s->scalars, (PyObject *)tp); /* borrowed */
    if (scalar != NULL)
        return PyObject_CallOneArg(scalar, v);
    if (PyErr_Occurred())
        return NULL;
    if (tp == &PySet_Type || tp == &PyFrozenSet_Type)
        return sequence(s, v, depth, budget);
    return NULL; /* give up: not an exact builtin */
}

static PyObject *
general(Shaper *s, PyObject *v)
{
    return PyObject_CallFunctionObjArgs(s->general, v, s->limits, NULL);
}

static PyObject *
shaper_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Shaper *s = (Shaper *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a shaper takes exactly one positional argument");
        return NULL;
    }
    PyObject *v = args[0];
    PyTypeObject *tp = Py_TYPE(v);
    if (tp == &PyUnicode_Type)
        return tagged_n(T_str, K_len, PyUnicode_GET_LENGTH(v));
    if (tp == &PyLong_Type)
        return tagged(T_int);
    if (tp == &PyDict_Type || tp == &PyList_Type || tp == &PyTuple_Type) {
        Py_ssize_t budget = s->top_work;
        PyObject *out = tp == &PyDict_Type ? obj(s, v, 0, &budget) : sequence(s, v, 0, &budget);
        if (out != NULL)
            return out;
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return NULL; /* KeyboardInterrupt and friends propagate, as in Python */
            PyErr_Clear();
        }
        return general(s, v);
    }
    PyObject *scalar = PyDict_GetItemWithError(s->scalars, (PyObject *)tp);
    if (scalar != NULL)
        return PyObject_CallOneArg(scalar, v);
    if (PyErr_Occurred())
        return NULL;
    return general(s, v);
}

/* Whether v is exactly "YYYY-MM-DDTHH:MM:SS.ffffffZ" (ASCII digits), the pipeline's timestamp format. */
static int
is_stamp(PyObject *v)
{
    if (!PyUnicode_CheckExact(v) || PyUnicode_GET_LENGTH(v) != 27 || PyUnicode_KIND(v) != PyUnicode_1BYTE_KIND)
        return 0;
    const Py_UCS1 *c = PyUnicode_1BYTE_DATA(v);
    static const char form[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    for (int i = 0; i < 27; i++) {
        if (form[i] == 'd' ? (c[i] < '0' || c[i] > '9') : c[i] != (Py_UCS1)form[i])
            return 0;
    }
    return 1;
}

/* Whether a mapping key may be emitted: exact str in the accepted cache (and short enough), else ask. */
static int
emittable(Shaper *s, PyObject *key)
{
    if (PyUnicode_CheckExact(key)) {
        int ok = PyDict_Contains(s->accepted, key);
        if (ok != 0 && (ok < 0 || !s->check_len || PyUnicode_GET_LENGTH(key) <= s->check_len))
            return ok;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(s->emittable, key, s->max_len_obj, NULL);
    if (r == NULL)
        return -1;
    int ok = PyObject_IsTrue(r);
    Py_DECREF(r);
    return ok;
}

/* ---- rendering: the same shapes written straight to JSON bytes, for a sink that serializes with orjson ----
 *
 * r_one / r_obj / r_seq / r_arr follow one / obj / sequence / arr step by step (the same budget, the same
 * points of giving up, the same keys in the same order) but append JSON text to a buffer instead of
 * building dicts. They return 1 when written, 0 to give up (the caller then shapes that value through the
 * dict path, which gives up the same way and runs the general walk), -1 on an error. Scalar types with a
 * callback (bytes and friends) give up here too: their shapes come from Python.
 */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char small[1024];
} Buf;

static void
buf_init(Buf *b)
{
    b->p = b->small;
    b->len = 0;
    b->cap = (Py_ssize_t)sizeof(b->small);
}

static void
buf_free(Buf *b)
{
    if (b->p != b->small)
        PyMem_Free(b->p);
}

static int
buf_grow(Buf *b, Py_ssize_t need)
{
    Py_ssize_t cap = b->cap;
    while (cap - b->len < need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *p = b->p == b->small ? PyMem_Malloc((size_t)cap) : PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->small)
        memcpy(p, b->small, (size_t)b->len);
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int
buf_put(Buf *b, const char *s, Py_ssize_t n)
{
    if (b->cap - b->len < n && buf_grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT_LIT(b, lit) buf_put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* A non-negative count in decimal (lengths and key counts; never negative here). */
static int
buf_num(Buf *b, Py_ssize_t n)
{
    char tmp[24];
    char *end = tmp + sizeof(tmp), *p = end;
    size_t u = n < 0 ? 0 : (size_t)n;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    return buf_put(b, p, end - p);
}

/* A JSON string (quotes included). 0: the str cannot be encoded as UTF-8 (a lone surrogate): give up. */
static int
buf_str(Buf *b, PyObject *str)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(str, &n);
    if (s == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    if (b->cap - b->len < 6 * n + 2 && buf_grow(b, 6 * n + 2) < 0)
        return -1;
    char *o = b->p + b->len;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        }
        else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            *o++ = '\\';
            switch (c) {
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
        }
        else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    b->len = o - b->p;
    return 1;
}

/* {"t":"<tag>","len":N} and friends, as tagged / tagged_n write them */
static int
r_str(Buf *b, Py_ssize_t n)
{
    return PUT_LIT(b, "{\"t\":\"str\",\"len\":") < 0 || buf_num(b, n) < 0 || PUT_LIT(b, "}") < 0 ? -1 : 1;
}

static int r_one(Shaper *s, PyObject *v, Py_ssize_t depth, Py_ssize_t *budget, Buf *b);

static int
r_obj(Shaper *s, PyObject *v, Py_ssize_t depth, Py_ssize_t *budget, Buf *b)
{
    Py_ssize_t n = PyDict_GET_SIZE(v);
    if (PUT_LIT(b, "{\"t\":\"obj\",\"n\":") < 0 || buf_num(b, n) < 0)
        return -1;
    if (n == 0)
        return PUT_LIT(b, "}") < 0 ? -1 : 1;
    Py_ssize_t work = *budget;
    if (depth >= s->max_depth || work <= 0)
        return 0;
    if (Py_EnterRecursiveCall(" while shaping a value"))
        return -1;
    Py_ssize_t hidden = 0, pos = 0, seen = 0, emitted = 0;
    Py_ssize_t mark = b->len; /* where ,"keys":{ starts: taken back when no key is emitted */
    PyObject *key, *value;
    int rc = 1;
    if (PUT_LIT(b, ",\"keys\":{") < 0) {
        rc = -1;
        goto done;
    }
    while (seen < s->max_keys && PyDict_Next(v, &pos, &key, &value)) {
        seen++;
        if (work <= 0) {
            rc = 0;
            goto done;
        }
        work--;
        Py_INCREF(key);
        Py_INCREF(value);
        int ok = emittable(s, key);
        if (ok < 0 || PyDict_GET_SIZE(v) != n) {
            rc = ok < 0 ? -1 : 0;
        }
        else if (ok) {
            rc = emitted && PUT_LIT(b, ",") < 0 ? -1 : buf_str(b, key);
            if (rc > 0)
                rc = PUT_LIT(b, ":") < 0 ? -1 : 1;
            if (rc > 0) {
                if (PyUnicode_CheckExact(value)) {
                    rc = r_str(b, PyUnicode_GET_LENGTH(value));
                }
                else if (PyLong_CheckExact(value)) {
                    rc = PUT_LIT(b, "{\"t\":\"int\"}") < 0 ? -1 : 1;
                }
                else {
                    *budget = work;
                    rc = r_one(s, value, depth + 1, budget, b);
                    work = *budget;
                }
            }
            emitted++;
        }
        else {
            hidden++;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc <= 0)
            goto done;
    }
    if (PyDict_GET_SIZE(v) != n) {
        rc = 0;
        goto done;
    }
    *budget = work;
    if (emitted)
        rc = PUT_LIT(b, "}") < 0 ? -1 : 1;
    else
        b->len = mark;
    if (rc > 0 && hidden)
        rc = PUT_LIT(b, ",\"hidden_keys\":") < 0 || buf_num(b, hidden) < 0 ? -1 : 1;
    if (rc > 0 && n > s->max_keys)
        rc = PUT_LIT(b, ",\"truncated\":true") < 0 ? -1 : 1;
    if (rc > 0)
        rc = PUT_LIT(b, "}") < 0 ? -1 : 1;
done:
    Py_LeaveRecursiveCall();
    return rc;
}

static int
r_arr(Shaper *s, Py_ssize_t n, PyObject *sample, Py_ssize_t depth, Py_ssize_t *budget, Buf *b)
{
    Py_ssize_t work = *budget;
    if (depth >= s->max_depth || work <= 0)
        return 0;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(sample);
    PyObject **items = PySequence_Fast_ITEMS(sample);
    *budget = work - m;
    if (PUT_LIT(b, "{\"t\":\"arr\",\"len\":") < 0 || buf_num(b, n) < 0 || PUT_LIT(b, ",\"items\":") < 0)
        return -1;
    PyTypeObject *tp = Py_TYPE(items[0]);
    for (Py_ssize_t i = 1; i < m; i++) {
        if (Py_TYPE(items[i]) != tp) {
            PyObject *tags = PyList_New(0);
            if (tags == NULL)
                return -1;
            int rc = 1;
            for (Py_ssize_t j = 0; j < m && rc > 0; j++) {
                PyObject *t = PyObject_CallOneArg(s->tag, (PyObject *)Py_TYPE(items[j]));
                if (t == NULL || !PyUnicode_Check(t)) {
                    rc = t == NULL ? -1 : 0;
                    Py_XDECREF(t);
                    break;
                }
                int has = PySequence_Contains(tags, t);
                if (has < 0 || (!has && PyList_Append(tags, t) < 0))
                    rc = -1;
                Py_DECREF(t);
            }
            if (rc > 0)
                rc = PUT_LIT(b, "{\"t\":\"mixed\",\"types\":[") < 0 ? -1 : 1;
            for (Py_ssize_t j = 0; rc > 0 && j < PyList_GET_SIZE(tags); j++) {
                rc = j && PUT_LIT(b, ",") < 0 ? -1 : buf_str(b, PyList_GET_ITEM(tags, j));
            }
            Py_DECREF(tags);
            if (rc > 0)
                rc = PUT_LIT(b, "]}}") < 0 ? -1 : 1;
            return rc;
        }
    }
    if (Py_EnterRecursiveCall(" while shaping a value"))
        return -1;
    int rc = r_one(s, items[0], depth + 1, budget, b);
    Py_LeaveRecursiveCall();
    if (rc > 0)
        rc = PUT_LIT(b, "}") < 0 ? -1 : 1;
    return rc;
}

static int
r_seq(Shaper *s, PyObject *v, Py_ssize_t depth, Py_ssize_t *budget, Buf *b)
{
    Py_ssize_t n = PyObject_Length(v);
    if (n < 0)
        return -1;
    if (n == 0)
        return PUT_LIT(b, "{\"t\":\"arr\",\"len\":0}") < 0 ? -1 : 1;
    PyObject *sample;
    if (PyList_CheckExact(v))
        sample = PyList_GetSlice(v, 0, s->max_items);
    else if (PyTuple_CheckExact(v))
        sample = PyTuple_GetSlice(v, 0, s->max_items);
    else
        return 0; /* sets: the dict path samples them */
    if (sample == NULL)
        return -1;
    int rc = PySequence_Fast_GET_SIZE(sample) == 0 ? 0 : r_arr(s, n, sample, depth, budget, b);
    Py_DECREF(sample);
    return rc;
}

static int
r_one(Shaper *s, PyObject *v, Py_ssize_t depth, Py_ssize_t *budget, Buf *b)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (tp == &PyUnicode_Type)
        return r_str(b, PyUnicode_GET_LENGTH(v));
    if (tp == &PyLong_Type)
        return PUT_LIT(b, "{\"t\":\"int\"}") < 0 ? -1 : 1;
    if (tp == &PyDict_Type)
        return r_obj(s, v, depth, budget, b);
    if (tp == &PyList_Type || tp == &PyTuple_Type)
        return r_seq(s, v, depth, budget, b);
    if (tp == &PyFloat_Type)
        return PUT_LIT(b, "{\"t\":\"float\"}") < 0 ? -1 : 1;
    if (tp == &PyBool_Type)
        return PUT_LIT(b, "{\"t\":\"bool\"}") < 0 ? -1 : 1;
    if (v == Py_None)
        return PUT_LIT(b, "{\"t\":\"null\"}") < 0 ? -1 : 1;
    return 0; /* scalars with a callback, sets, anything else: the dict path */
}

static PyObject *
to_fragment(Shaper *s, Buf *b)
{
    PyObject *bytes = PyBytes_FromStringAndSize(b->p, b->len);
    if (bytes == NULL)
        return NULL;
    PyObject *frag = PyObject_CallOneArg(s->fragment, bytes);
    Py_DECREF(bytes);
    return frag;
}

/* The shared Fragment of a scalar's shape (slot: 0 int, 1 float, 2 bool, 3 null, 4 + n str of length n). */
static PyObject *
scalar_fragment(Shaper *s, Py_ssize_t slot, Py_ssize_t len, Buf *b)
{
    PyObject *frag = s->scalar_frags[slot];
    if (frag == NULL) {
        static const char *const lits[] = {"{\"t\":\"int\"}", "{\"t\":\"float\"}", "{\"t\":\"bool\"}",
                                           "{\"t\":\"null\"}"};
        b->len = 0;
        int rc = slot < 4 ? buf_put(b, lits[slot], (Py_ssize_t)strlen(lits[slot])) : r_str(b, len) < 0 ? -1 : 0;
        if (rc < 0 || (frag = to_fragment(s, b)) == NULL)
            return NULL;
        if (s->scalar_frags[slot] != NULL) { /* made meanwhile by another caller: keep that one */
            Py_DECREF(frag);
            frag = s->scalar_frags[slot];
        }
        else {
            s->scalar_frags[slot] = frag;
        }
    }
    return Py_NewRef(frag);
}

/* The shape of one field's value: a Fragment of its JSON when rendered, else the dict path's shape. */
static PyObject *
render_value(Shaper *s, PyObject *v, Buf *b)
{
    PyTypeObject *tp = Py_TYPE(v);
    int rc = 0;
    b->len = 0;
    if (tp == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(v);
        if (n < STR_CACHED)
            return scalar_fragment(s, 4 + n, n, b);
        return r_str(b, n) < 0 ? NULL : to_fragment(s, b);
    }
    if (tp == &PyLong_Type)
        return scalar_fragment(s, 0, 0, b);
    if (tp == &PyFloat_Type)
        return scalar_fragment(s, 1, 0, b);
    if (tp == &PyBool_Type)
        return scalar_fragment(s, 2, 0, b);
    if (v == Py_None)
        return scalar_fragment(s, 3, 0, b);
    if (tp == &PyDict_Type || tp == &PyList_Type || tp == &PyTuple_Type) {
        Py_ssize_t budget = s->top_work;
        rc = tp == &PyDict_Type ? r_obj(s, v, 0, &budget, b) : r_seq(s, v, 0, &budget, b);
        if (rc < 0) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return NULL;
            PyErr_Clear();
            rc = 0;
        }
    }
    if (rc == 0) {
        PyObject *args1[1] = {v};
        return shaper_vectorcall((PyObject *)s, args1, 1, NULL);
    }
    return to_fragment(s, b);
}

PyDoc_STRVAR(fields_doc,
             "fields(event, reserved, names, /) -> (out, hidden, present)\n\n"
             "Shape every value of the dict ``event`` whose key is not in the frozenset ``reserved``: the\n"
             "shapes by key (keys that may not be emitted are only counted in ``hidden``). Reserved keys in\n"
             "``names`` keep their value when it may be emitted as a key could, else it is shaped; a\n"
             "``timestamp`` in the pipeline's format is kept; the other reserved keys present are listed, in\n"
             "order, for the caller to vet.");

static PyObject *
fields_impl(PyObject *self, PyObject *const *args, Py_ssize_t nargs, int render)
{
    Shaper *s = (Shaper *)self;
    if (nargs != 3 || !PyDict_CheckExact(args[0]) || !PyFrozenSet_CheckExact(args[1]) ||
        !PyFrozenSet_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "fields(event: dict, reserved: frozenset, names: frozenset)");
        return NULL;
    }
    if (render && s->fragment == NULL) {
        PyErr_SetString(PyExc_TypeError, "render_fields needs a Shaper made with fragment=orjson.Fragment");
        return NULL;
    }
    Buf buf;
    buf_init(&buf);
    PyObject *event = args[0], *reserved = args[1], *names = args[2];
    Py_ssize_t n = PyDict_GET_SIZE(event), pos = 0, hidden = 0;
    PyObject *out = PyDict_New(), *present = PyList_New(0), *key, *value;
    if (out == NULL || present == NULL)
        goto fail;
    while (PyDict_Next(event, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        int rc = PyUnicode_CheckExact(key) ? PySet_Contains(reserved, key) : 0;
        if (rc > 0) {
            rc = PySet_Contains(names, key);
            if (rc > 0) { /* a name (level, logger): kept when it may be emitted as a key could, else shaped */
                rc = PyUnicode_CheckExact(value) ? emittable(s, value) : 0;
                PyObject *kept = NULL;
                if (rc > 0)
                    kept = Py_NewRef(value);
                else if (rc == 0) {
                    PyObject *args1[1] = {value};
                    kept = shaper_vectorcall(self, args1, 1, NULL);
                }
                rc = kept == NULL ? -1 : PyDict_SetItem(out, key, kept);
                Py_XDECREF(kept);
            }
            else if (rc == 0 && s->stamp_key != NULL && key == s->stamp_key && is_stamp(value)) {
                rc = PyDict_SetItem(out, key, value); /* the pipeline's own timestamp format */
            }
            else if (rc == 0) {
                rc = PyList_Append(present, key);
            }
        }
        else if (rc == 0) {
            rc = emittable(s, key);
            if (rc == 0) {
                hidden++;
            }
            else if (rc > 0) {
                PyObject *args1[1] = {value};
                PyObject *shape =
                    render ? render_value(s, value, &buf) : shaper_vectorcall(self, args1, 1, NULL);
                rc = shape == NULL ? -1 : PyDict_SetItem(out, key, shape);
                Py_XDECREF(shape);
            }
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0)
            goto fail;
        if (PyDict_GET_SIZE(event) != n) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            goto fail;
        }
    }
    buf_free(&buf);
    return Py_BuildValue("(NnN)", out, hidden, present);
fail:
    buf_free(&buf);
    Py_XDECREF(out);
    Py_XDECREF(present);
    return NULL;
}

static PyObject *
shaper_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fields_impl(self, args, nargs, 0);
}

PyDoc_STRVAR(render_fields_doc,
             "render_fields(event, reserved, names, /) -> (out, hidden, present)\n\n"
             "As fields(), but a container's shape comes as an orjson.Fragment of its JSON (the same text\n"
             "orjson writes for the dict fields() gives) wherever the fast path answers; elsewhere, and for\n"
             "scalars, the dict itself.");

static PyObject *
shaper_render_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fields_impl(self, args, nargs, 1);
}

PyDoc_STRVAR(render_doc,
             "render(value, /) -> Fragment | shape\n\n"
             "The value's shape as an orjson.Fragment of its JSON where the fast path answers (the text\n"
             "orjson writes for the shape's dict); elsewhere the shape itself, as calling the shaper gives.");

static PyObject *
shaper_render(PyObject *self, PyObject *value)
{
    Shaper *s = (Shaper *)self;
    if (s->fragment == NULL) {
        PyErr_SetString(PyExc_TypeError, "render needs a Shaper made with fragment=orjson.Fragment");
        return NULL;
    }
    Buf buf;
    buf_init(&buf);
    PyObject *out = render_value(s, value, &buf);
    buf_free(&buf);
    return out;
}

static PyMethodDef shaper_methods[] = {
    {"fields", (PyCFunction)(void (*)(void))shaper_fields, METH_FASTCALL, fields_doc},
    {"render_fields", (PyCFunction)(void (*)(void))shaper_render_fields, METH_FASTCALL, render_fields_doc},
    {"render", (PyCFunction)shaper_render, METH_O, render_doc},
    {NULL, NULL, 0, NULL},
};

static int
shaper_traverse(Shaper *s, visitproc visit, void *arg)
{
    Py_VISIT(s->max_len_obj);
    Py_VISIT(s->general);
    Py_VISIT(s->emittable);
    Py_VISIT(s->tag);
    Py_VISIT(s->scalars);
    Py_VISIT(s->accepted);
    Py_VISIT(s->limits);
    Py_VISIT(s->stamp_key);
    Py_VISIT(s->fragment);
    for (size_t i = 0; i < sizeof(s->scalar_frags) / sizeof(s->scalar_frags[0]); i++)
        Py_VISIT(s->scalar_frags[i]);
    return 0;
}

static int
shaper_clear(Shaper *s)
{
    Py_CLEAR(s->max_len_obj);
    Py_CLEAR(s->general);
    Py_CLEAR(s->emittable);
    Py_CLEAR(s->tag);
    Py_CLEAR(s->scalars);
    Py_CLEAR(s->accepted);
    Py_CLEAR(s->limits);
    Py_CLEAR(s->stamp_key);
    Py_CLEAR(s->fragment);
    for (size_t i = 0; i < sizeof(s->scalar_frags) / sizeof(s->scalar_frags[0]); i++)
        Py_CLEAR(s->scalar_frags[i]);
    return 0;
}

static void
shaper_dealloc(Shaper *s)
{
    PyObject_GC_UnTrack(s);
    shaper_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *
shaper_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"limits", "max_depth", "max_keys", "max_items", "max_key_len", "max_work",
                             "check_len", "general", "emittable", "tag", "scalars", "accepted", "fragment",
                             NULL};
    Py_ssize_t max_depth = 0, max_keys = 0, max_items = 0, max_len = 0, max_work = 0, check_len = -1;
    PyObject *limits = NULL, *general_ = NULL, *emittable = NULL, *tag = NULL, *scalars = NULL;
    PyObject *accepted = NULL, *fragment = Py_None;
    /* every argument is keyword-only; all but fragment are required (checked below) */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OnnnnnnOOOO!O!O:Shaper", kwlist, &limits, &max_depth,
                                     &max_keys, &max_items, &max_len, &max_work, &check_len, &general_,
                                     &emittable, &tag, &PyDict_Type, &scalars, &PyDict_Type, &accepted,
                                     &fragment))
        return NULL;
    if (limits == NULL || general_ == NULL || emittable == NULL || tag == NULL || scalars == NULL ||
        accepted == NULL) {
        PyErr_SetString(PyExc_TypeError, "Shaper needs limits, general, emittable, tag, scalars and accepted");
        return NULL;
    }
    if (fragment != Py_None && !PyCallable_Check(fragment)) {
        PyErr_SetString(PyExc_TypeError, "fragment must be callable (orjson.Fragment) or None");
        return NULL;
    }
    if (max_depth < 1 || max_keys < 1 || max_items < 1 || max_len < 1 || max_work < 1 || check_len < 0) {
        PyErr_SetString(PyExc_ValueError, "Shaper limits must be positive");
        return NULL;
    }
    if (!PyCallable_Check(general_) || !PyCallable_Check(emittable) || !PyCallable_Check(tag)) {
        PyErr_SetString(PyExc_TypeError, "general, emittable and tag must be callable");
        return NULL;
    }
    Shaper *s = (Shaper *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    s->vectorcall = shaper_vectorcall;
    s->max_depth = max_depth;
    s->max_keys = max_keys;
    s->max_items = max_items;
    s->max_len = max_len;
    s->top_work = max_work - 1;
    s->check_len = check_len;
    s->max_len_obj = PyLong_FromSsize_t(max_len);
    if (s->max_len_obj == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    s->limits = Py_NewRef(limits);
    s->general = Py_NewRef(general_);
    s->emittable = Py_NewRef(emittable);
    s->tag = Py_NewRef(tag);
    s->scalars = Py_NewRef(scalars);
    s->accepted = Py_NewRef(accepted);
    s->fragment = fragment == Py_None ? NULL : Py_NewRef(fragment);
    s->stamp_key = PyUnicode_InternFromString("timestamp");
    if (s->stamp_key == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    return (PyObject *)s;
}

PyDoc_STRVAR(shaper_doc,
             "Shaper(*, limits, max_depth, max_keys, max_items, max_key_len, max_work, check_len, general,\n"
             "       emittable, tag, scalars, accepted, fragment=None)\n\n"
             "shape_of's fast path for one set of limits; call it with one value. See processors/_fastshape.py.");

static PyTypeObject ShaperType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "processors._cshape.Shaper",
    .tp_basicsize = sizeof(Shaper),
    .tp_dealloc = (destructor)shaper_dealloc,
    .tp_vectorcall_offset = offsetof(Shaper, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = shaper_doc,
    .tp_traverse = (traverseproc)shaper_traverse,
    .tp_methods = shaper_methods,
    .tp_clear = (inquiry)shaper_clear,
    .tp_new = shaper_new,
};

/* utc_timestamp(): the pipeline's timestamp, "YYYY-MM-DDTHH:MM:SS.ffffffZ", from one clock read. The
 * formatted second is cached (the GIL serialises callers); the microseconds are written digit by digit. */
static time_t stamp_second = (time_t)-1;
static char stamp_prefix[20]; /* "YYYY-MM-DDTHH:MM:SS" */

PyDoc_STRVAR(utc_timestamp_doc,
             "utc_timestamp() -> str\n\n"
             "The current UTC time as YYYY-MM-DDTHH:MM:SS.ffffffZ (always microseconds), one clock read.");

static PyObject *
utc_timestamp(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (ts.tv_sec != stamp_second) {
        if (gmtime_r(&ts.tv_sec, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999 ||
            strftime(stamp_prefix, sizeof(stamp_prefix), "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
            PyErr_SetString(PyExc_OverflowError, "the clock is outside years 0-9999");
            return NULL;
        }
        stamp_second = ts.tv_sec;
    }
    PyObject *out = PyUnicode_New(27, 127);
    if (out == NULL)
        return NULL;
    Py_UCS1 *c = PyUnicode_1BYTE_DATA(out);
    memcpy(c, stamp_prefix, 19);
    c[19] = '.';
    long us = ts.tv_nsec / 1000;
    for (int i = 25; i >= 20; i--) {
        c[i] = (Py_UCS1)('0' + us % 10);
        us /= 10;
    }
    c[26] = 'Z';
    return out;
}

static PyMethodDef module_methods[] = {
    {"utc_timestamp", utc_timestamp, METH_NOARGS, utc_timestamp_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "processors._cshape",
    .m_doc = "The compiled fast paths of processors.shapes.shape_of and of the pipeline's timestamp.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__cshape(void)
{
    if (intern(&K_t, "t") || intern(&K_len, "len") || intern(&K_n, "n") || intern(&K_keys, "keys") ||
        intern(&K_hidden, "hidden_keys") || intern(&K_truncated, "truncated") || intern(&K_items, "items") ||
        intern(&K_types, "types") || intern(&V_str, "str") || intern(&V_int, "int") || intern(&V_obj, "obj") ||
        intern(&V_arr, "arr") || intern(&V_float, "float") || intern(&V_bool, "bool") ||
        intern(&V_null, "null") || intern(&V_mixed, "mixed"))
        return NULL;
    if ((T_str = template(V_str, K_len)) == NULL || (T_int = template(V_int, NULL)) == NULL ||
        (T_float = template(V_float, NULL)) == NULL || (T_bool = template(V_bool, NULL)) == NULL ||
        (T_null = template(V_null, NULL)) == NULL || (T_obj = template(V_obj, K_n)) == NULL ||
        (T_arr = template(V_arr, K_len)) == NULL || (T_mixed = template(V_mixed, NULL)) == NULL)
        return NULL;
    if (PyType_Ready(&ShaperType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Shaper", (PyObject *)&ShaperType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
