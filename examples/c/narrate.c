/*
 * narrate: reads a story aloud with libespeak-ng, one storyflow-tasks task per
 * chapter and one WAV file per sentence, while the main thread polls each
 * task's status JSON to draw a progress bar per task.
 *
 * The C twin of examples/narrate.py; the story format is the one described
 * in examples/story.py, parsed by the same rules.
 *
 *   narrate [--out DIR] [--report FILE] [--pace SECONDS] STORY.txt
 *
 * Ctrl-C cancels: pending chapters never run, the running one stops after
 * its current sentence. Exit status: 0 all chapters completed (segment errors
 * allowed), 1 a chapter failed, 2 bad usage or story, 130 interrupted.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <espeak-ng/espeak_ng.h>

#include "storyflow_tasks.h"

#define DEFAULT_VOICE "en"
#define MAX_VOICE_NAME 60 /* espeak-ng copies voice names into a 60-byte buffer */
#define POLL_INTERVAL_MS 100
#define BAR_WIDTH 20
#define SNIPPET_CHARS 32
#define PATH_BYTES 1024    /* longest WAV path, NUL included */
#define ERROR_BYTES 1536   /* room for a path and a reason */

/* ---------------------------------------------------------------- story -- */

typedef struct {
    char *text;
    char *voice; /* NULL: the default voice */
} Sentence;

typedef struct {
    char *title;
    char *slug;
    char *body; /* the chapter's lines joined by spaces, until split */
    Sentence *sentences;
    size_t sentence_count;
} Chapter;

typedef struct {
    char *title;
    Chapter *chapters;
    size_t chapter_count;
} Story;

static void die(int code, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("narrate: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(code);
}

static void *checked_realloc(void *block, size_t size)
{
    void *grown = realloc(block, size ? size : 1);
    if (!grown)
        die(1, "out of memory");
    return grown;
}

static char *copy_range(const char *start, size_t length)
{
    char *copy = checked_realloc(NULL, length + 1);
    memcpy(copy, start, length);
    copy[length] = '\0';
    return copy;
}

static bool is_space(char c) { return isspace((unsigned char)c) != 0; }

/* Trims ASCII whitespace in place; returns the first non-space character. */
static char *trim(char *text)
{
    while (is_space(*text))
        text++;
    size_t length = strlen(text);
    while (length > 0 && is_space(text[length - 1]))
        text[--length] = '\0';
    return text;
}

static bool is_voice_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '+' || c == '-';
}

/* Takes a leading "[voice:NAME]" off a sentence (the rules of story.py's parse_markup). */
static Sentence parse_markup(char *raw, const char *path, const char *chapter, size_t number)
{
    Sentence sentence = {NULL, NULL};
    if (raw[0] != '[') {
        sentence.text = copy_range(raw, strlen(raw));
        return sentence;
    }
    static const char prefix[] = "[voice:";
    char *close = strchr(raw, ']');
    const char *name = raw + sizeof prefix - 1;
    bool valid = strncmp(raw, prefix, sizeof prefix - 1) == 0 && close && close > name &&
                 (size_t)(close - name) <= MAX_VOICE_NAME;
    size_t name_length = valid ? (size_t)(close - name) : 0;
    for (size_t i = 0; valid && i < name_length; i++)
        valid = is_voice_char(name[i]);
    if (!valid)
        die(2, "%s: chapter '%s', sentence %zu: markup must be [voice:NAME] with NAME made of "
               "letters, digits, '_', '+' or '-' (at most %d), got '%.40s'",
            path, chapter, number, MAX_VOICE_NAME, raw);
    char *text = trim(close + 1);
    if (!*text)
        die(2, "%s: chapter '%s', sentence %zu: [voice:%.*s] with no text after it", path,
            chapter, number, (int)name_length, name);
    sentence.voice = copy_range(name, name_length);
    sentence.text = copy_range(text, strlen(text));
    return sentence;
}

/* Where the sentence starting at text ends: after [.!?] and any closing quotes,
 * when whitespace or the end follows; else the end of the text. */
static size_t sentence_end(const char *text)
{
    for (size_t i = 0; text[i]; i++) {
        if (!strchr(".!?", text[i]))
            continue;
        size_t end = i + 1;
        while (text[end] == '"' || text[end] == '\'')
            end++;
        if (!text[end] || is_space(text[end]))
            return end;
    }
    return strlen(text);
}

static void split_sentences(Chapter *chapter, const char *path)
{
    char *text = trim(chapter->body);
    while (*text) {
        size_t end = sentence_end(text);
        char *raw = copy_range(text, end);
        chapter->sentences = checked_realloc(chapter->sentences,
                                             (chapter->sentence_count + 1) * sizeof(Sentence));
        chapter->sentences[chapter->sentence_count] =
            parse_markup(trim(raw), path, chapter->title, chapter->sentence_count + 1);
        chapter->sentence_count++;
        free(raw);
        text += end;
        while (is_space(*text))
            text++;
    }
}

/* "The Fox & the Grapes" -> "the-fox-the-grapes", as story.py's slug(). */
static char *make_slug(const char *title)
{
    size_t length = strlen(title), used = 0;
    char *slug = checked_realloc(NULL, length + sizeof("chapter"));
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)title[i];
        if (isalnum(c) && c < 128)
            slug[used++] = (char)tolower(c);
        else if (used > 0 && slug[used - 1] != '-')
            slug[used++] = '-';
    }
    while (used > 0 && slug[used - 1] == '-')
        used--;
    slug[used] = '\0';
    if (used == 0)
        strcpy(slug, "chapter");
    return slug;
}

static void append_line(char **body, const char *line)
{
    size_t old = *body ? strlen(*body) : 0, extra = strlen(line);
    *body = checked_realloc(*body, old + extra + 2);
    if (old)
        (*body)[old++] = ' ';
    memcpy(*body + old, line, extra + 1);
}

static char *read_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        die(2, "cannot read %s: %s", path, strerror(errno));
    char *data = NULL;
    size_t length = 0, capacity = 0, got;
    do {
        if (length + 4096 > capacity)
            data = checked_realloc(data, capacity = 2 * capacity + 4096);
        got = fread(data + length, 1, capacity - length - 1, file);
        length += got;
    } while (got > 0);
    if (ferror(file))
        die(2, "cannot read %s: %s", path, strerror(errno));
    fclose(file);
    data[length] = '\0';
    if (strlen(data) != length)
        die(2, "%s: not a text file (it holds a NUL byte)", path);
    return data;
}

static Story load_story(const char *path)
{
    Story story = {NULL, NULL, 0};
    char *data = read_file(path), *cursor = data;
    for (size_t line_number = 1; cursor; line_number++) {
        char *newline = strchr(cursor, '\n');
        if (newline)
            *newline = '\0';
        char *line = trim(cursor);
        cursor = newline ? newline + 1 : NULL;
        if (!*line)
            continue;
        if (strncmp(line, "## ", 3) == 0) {
            story.chapters = checked_realloc(story.chapters,
                                             (story.chapter_count + 1) * sizeof(Chapter));
            Chapter *chapter = &story.chapters[story.chapter_count++];
            memset(chapter, 0, sizeof *chapter);
            char *title = trim(line + 3);
            chapter->title = copy_range(title, strlen(title));
        } else if (strncmp(line, "# ", 2) == 0 && story.chapter_count == 0 && !story.title) {
            char *title = trim(line + 2);
            story.title = copy_range(title, strlen(title));
        } else if (story.chapter_count == 0) {
            die(2, "%s:%zu: text before the first chapter heading ('## ...')", path, line_number);
        } else {
            append_line(&story.chapters[story.chapter_count - 1].body, line);
        }
    }
    free(data);
    if (story.chapter_count == 0)
        die(2, "%s: no chapter found (a chapter starts with a '## ' line)", path);
    for (size_t i = 0; i < story.chapter_count; i++) {
        Chapter *chapter = &story.chapters[i];
        if (!*chapter->title)
            die(2, "%s: chapter %zu: empty chapter heading", path, i + 1);
        if (chapter->body)
            split_sentences(chapter, path);
        if (chapter->sentence_count == 0)
            die(2, "%s: chapter '%s': the chapter has no text", path, chapter->title);
        chapter->slug = make_slug(chapter->title);
    }
    return story;
}

static void free_story(Story *story)
{
    for (size_t i = 0; i < story->chapter_count; i++) {
        Chapter *chapter = &story->chapters[i];
        for (size_t j = 0; j < chapter->sentence_count; j++) {
            free(chapter->sentences[j].text);
            free(chapter->sentences[j].voice);
        }
        free(chapter->sentences);
        free(chapter->title);
        free(chapter->slug);
        free(chapter->body);
    }
    free(story->chapters);
    free(story->title);
}

/* --------------------------------------------------------------- engine -- */

/* libespeak-ng keeps global state and is not thread-safe; only the single
 * storyflow-tasks worker thread synthesises, so one set of globals suffices. */
static int16_t *g_samples;
static size_t g_sample_count, g_sample_capacity;
static bool g_samples_overflowed;
static char g_voice[MAX_VOICE_NAME + 1];
static int g_sample_rate;

static int collect_samples(short *wav, int count, espeak_EVENT *events)
{
    (void)events;
    if (!wav || count <= 0)
        return 0;
    if (g_sample_count + (size_t)count > g_sample_capacity) {
        size_t capacity = 2 * g_sample_capacity + (size_t)count;
        int16_t *grown = realloc(g_samples, capacity * sizeof *grown);
        if (!grown) {
            g_samples_overflowed = true;
            return 1; /* aborts the synthesis */
        }
        g_samples = grown;
        g_sample_capacity = capacity;
    }
    memcpy(g_samples + g_sample_count, wav, (size_t)count * sizeof *wav);
    g_sample_count += (size_t)count;
    return 0;
}

static void status_message(espeak_ng_STATUS status, char *out, size_t out_size)
{
    char text[256];
    espeak_ng_GetStatusCodeMessage(status, text, sizeof text);
    snprintf(out, out_size, "%s (status 0x%08X)", text, (unsigned)status);
}

/* data_path NULL: the espeak-ng-data that Debian's package installed. */
static void engine_start(const char *data_path)
{
    espeak_ng_ERROR_CONTEXT context = NULL;
    espeak_ng_InitializePath(data_path);
    espeak_ng_STATUS status = espeak_ng_Initialize(&context);
    if (status == ENS_OK)
        status = espeak_ng_InitializeOutput(ENOUTPUT_MODE_SYNCHRONOUS, 0, NULL);
    if (status != ENS_OK) {
        char message[320];
        status_message(status, message, sizeof message);
        espeak_ng_ClearErrorContext(&context);
        die(1, "cannot start libespeak-ng: %s", message);
    }
    g_sample_rate = espeak_ng_GetSampleRate();
    espeak_SetSynthCallback(collect_samples);
}

static void put_le(unsigned char *out, uint32_t value, int bytes)
{
    for (int i = 0; i < bytes; i++)
        out[i] = (unsigned char)(value >> (8 * i));
}

/* Writes 16-bit mono PCM as a RIFF/WAVE file. */
static int write_wav(const char *path, const int16_t *samples, size_t count, int rate,
                     char *error, size_t error_size)
{
    unsigned char header[44];
    uint32_t data_bytes = (uint32_t)(count * 2);
    memcpy(header, "RIFF", 4);
    put_le(header + 4, 36 + data_bytes, 4);
    memcpy(header + 8, "WAVEfmt ", 8);
    put_le(header + 16, 16, 4);               /* fmt chunk size */
    put_le(header + 20, 1, 2);                /* PCM */
    put_le(header + 22, 1, 2);                /* mono */
    put_le(header + 24, (uint32_t)rate, 4);
    put_le(header + 28, (uint32_t)rate * 2, 4); /* bytes per second */
    put_le(header + 32, 2, 2);                /* bytes per frame */
    put_le(header + 34, 16, 2);               /* bits per sample */
    memcpy(header + 36, "data", 4);
    put_le(header + 40, data_bytes, 4);
    FILE *file = fopen(path, "wb");
    if (!file) {
        snprintf(error, error_size, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    bool ok = fwrite(header, 1, sizeof header, file) == sizeof header;
    for (size_t i = 0; ok && i < count; i++) {
        unsigned char frame[2];
        put_le(frame, (uint16_t)samples[i], 2);
        ok = fwrite(frame, 1, 2, file) == 2;
    }
    if (fclose(file) != 0 || !ok) {
        snprintf(error, error_size, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Speaks one sentence into a WAV file; on failure, error says why (the engine's reason). */
static int synthesize(const Sentence *sentence, const char *path, double *duration,
                      char *error, size_t error_size)
{
    const char *voice = sentence->voice ? sentence->voice : DEFAULT_VOICE;
    espeak_ng_STATUS status = ENS_OK;
    if (strcmp(voice, g_voice) != 0) {
        status = espeak_ng_SetVoiceByName(voice);
        if (status != ENS_OK) {
            char message[320];
            g_voice[0] = '\0'; /* a failed switch may leave a half-changed voice */
            status_message(status, message, sizeof message);
            snprintf(error, error_size, "voice '%s': %s", voice, message);
            return -1;
        }
        snprintf(g_voice, sizeof g_voice, "%s", voice);
    }
    g_sample_count = 0;
    g_samples_overflowed = false;
    size_t size = strlen(sentence->text) + 1; /* espeak-ng counts the NUL */
    status = espeak_ng_Synthesize(sentence->text, size, 0, POS_CHARACTER, 0, espeakCHARS_UTF8,
                                  NULL, NULL);
    if (status == ENS_OK)
        status = espeak_ng_Synchronize();
    if (status != ENS_OK) {
        char message[320];
        status_message(status, message, sizeof message);
        snprintf(error, error_size, "espeak_ng_Synthesize: %s", message);
        return -1;
    }
    if (g_samples_overflowed) {
        snprintf(error, error_size, "out of memory while collecting audio");
        return -1;
    }
    if (g_sample_count == 0) {
        snprintf(error, error_size, "espeak-ng produced no audio for '%.40s'", sentence->text);
        return -1;
    }
    if (write_wav(path, g_samples, g_sample_count, g_sample_rate, error, error_size) != 0)
        return -1;
    *duration = (double)g_sample_count / g_sample_rate;
    return 0;
}

/* ----------------------------------------------------------------- task -- */

typedef struct {
    const Chapter *chapter;
    char directory[PATH_BYTES - 32]; /* room left for "/<number>.wav" */
    double pace_seconds;
} ChapterJob;

static void free_job(void *job) { free(job); }

static int make_directories(const char *path)
{
    char partial[PATH_BYTES];
    snprintf(partial, sizeof partial, "%s", path);
    for (char *slash = partial + 1; *slash; slash++) {
        if (*slash != '/')
            continue;
        *slash = '\0';
        if (mkdir(partial, 0777) != 0 && errno != EEXIST)
            return -1;
        *slash = '/';
    }
    return mkdir(partial, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

static bool cancel_requested(const char *task_id)
{
    bool requested = false;
    /* If the library cannot answer, stopping is the safe reading. */
    return sft_is_cancel_requested(task_id, &requested) != SFT_OK || requested;
}

static void sleep_ms(long milliseconds)
{
    struct timespec pause = {milliseconds / 1000, (milliseconds % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

/* --pace: a pause after each sentence, cut short by a cancellation request. */
static void pace(const char *task_id, double seconds)
{
    for (double waited = 0; waited < seconds && !cancel_requested(task_id); waited += 0.05)
        sleep_ms(50);
}

/* Fails the task with the library's reason for a failed call. */
static int32_t fail_task(const char *task_id, const char *call, SftResult result)
{
    char message[512];
    char *reason = sft_last_error_message();
    snprintf(message, sizeof message, "%s: %s: %s", call, sft_result_name(result),
             reason ? reason : "no message");
    sft_string_free(reason);
    sft_set_task_error(task_id, message);
    return 1;
}

/* Reports sentence `number` as its wire object, encoded by cJSON so that any path or message
 * round-trips: {"segment_id": N, key: text, "duration": D} for audio (duration >= 0),
 * {"segment_id": N, "error": text} for an error (duration < 0). The id stays a JSON number. */
static SftResult report_segment(const char *task_id, size_t number, const char *key, const char *text,
                                double duration)
{
    cJSON *segment = cJSON_CreateObject();
    char *json = NULL;
    if (segment && cJSON_AddNumberToObject(segment, "segment_id", (double)number)
        && cJSON_AddStringToObject(segment, key, text)
        && (duration < 0 || cJSON_AddNumberToObject(segment, "duration", duration)))
        json = cJSON_PrintUnformatted(segment);
    cJSON_Delete(segment);
    if (!json)
        return SFT_ERR_INTERNAL; /* out of memory */
    SftResult result = duration < 0 ? sft_add_error_from_json(task_id, json)
                                    : sft_add_completed_segment_from_json(task_id, json);
    cJSON_free(json);
    return result;
}

/* The task function: runs on the worker thread, one sentence after another. */
static int32_t narrate_chapter(const char *task_id, void *user_data)
{
    const ChapterJob *job = user_data;
    size_t total = job->chapter->sentence_count, spoken = 0;
    if (make_directories(job->directory) != 0) {
        char message[ERROR_BYTES];
        snprintf(message, sizeof message, "cannot create %s: %s", job->directory,
                 strerror(errno));
        sft_set_task_error(task_id, message);
        return 1;
    }
    for (size_t i = 0; i < total; i++) {
        if (cancel_requested(task_id))
            return 0; /* ends CANCELLED: cancellation was requested */
        char extra[64], path[PATH_BYTES], error[ERROR_BYTES];
        double duration = 0;
        snprintf(extra, sizeof extra, "{\"current_segment_id\": %zu}", i + 1);
        snprintf(path, sizeof path, "%s/%03zu.wav", job->directory, i + 1);
        SftResult result = sft_update_task_progress(task_id, i, total, extra);
        if (result != SFT_OK)
            return fail_task(task_id, "sft_update_task_progress", result);
        if (synthesize(&job->chapter->sentences[i], path, &duration, error, sizeof error) == 0) {
            result = report_segment(task_id, i + 1, "audio_url", path, duration);
            if (result != SFT_OK)
                return fail_task(task_id, "sft_add_completed_segment_from_json", result);
            spoken++;
        } else {
            result = report_segment(task_id, i + 1, "error", error, -1);
            if (result != SFT_OK)
                return fail_task(task_id, "sft_add_error_from_json", result);
        }
        pace(task_id, job->pace_seconds);
    }
    SftResult result = sft_update_task_progress(task_id, total, total, NULL);
    if (result != SFT_OK)
        return fail_task(task_id, "sft_update_task_progress", result);
    if (spoken == 0) {
        sft_set_task_error(task_id, "no sentence of the chapter could be synthesised");
        return 1;
    }
    return 0;
}

/* ----------------------------------------------------------- main thread -- */

/* What the main thread reads from one task's status JSON. */
typedef struct {
    char task_id[128];
    char status[16];
    char error[256];
    uint64_t current, total, percentage, segment_id;
    size_t segments, errors;
    double audio_seconds, started_at, completed_at;
    bool cancel_requested;
} TaskView;

static volatile sig_atomic_t g_interrupts;

static void on_interrupt(int signal_number)
{
    (void)signal_number;
    g_interrupts++;
    if (g_interrupts > 1)
        _exit(130); /* a second Ctrl-C: leave at once */
}

static double number_or(const cJSON *item, double fallback)
{
    return cJSON_IsNumber(item) ? item->valuedouble : fallback;
}

/* Fills view from a status JSON; false if the JSON is not a status. */
static bool read_status(const char *json, TaskView *view)
{
    cJSON *root = cJSON_Parse(json);
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(root, "status");
    if (!cJSON_IsString(status)) {
        cJSON_Delete(root);
        return false;
    }
    snprintf(view->status, sizeof view->status, "%s", status->valuestring);
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
    snprintf(view->error, sizeof view->error, "%s",
             cJSON_IsString(error) ? error->valuestring : "");
    const cJSON *progress = cJSON_GetObjectItemCaseSensitive(root, "progress");
    view->current = (uint64_t)number_or(cJSON_GetObjectItemCaseSensitive(progress, "current"), 0);
    view->total = (uint64_t)number_or(cJSON_GetObjectItemCaseSensitive(progress, "total"), 0);
    view->percentage =
        (uint64_t)number_or(cJSON_GetObjectItemCaseSensitive(progress, "percentage"), 0);
    view->segment_id =
        (uint64_t)number_or(cJSON_GetObjectItemCaseSensitive(progress, "current_segment_id"), 0);
    const cJSON *segments = cJSON_GetObjectItemCaseSensitive(root, "completed_segments");
    const cJSON *segment;
    view->segments = (size_t)cJSON_GetArraySize(segments);
    view->audio_seconds = 0;
    cJSON_ArrayForEach(segment, segments)
        view->audio_seconds += number_or(cJSON_GetObjectItemCaseSensitive(segment, "duration"), 0);
    view->errors = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "errors"));
    view->started_at = number_or(cJSON_GetObjectItemCaseSensitive(root, "started_at"), -1);
    view->completed_at = number_or(cJSON_GetObjectItemCaseSensitive(root, "completed_at"), -1);
    view->cancel_requested =
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "cancel_requested"));
    cJSON_Delete(root);
    return true;
}

static bool is_final(const TaskView *view)
{
    return !strcmp(view->status, "COMPLETED") || !strcmp(view->status, "FAILED") ||
           !strcmp(view->status, "CANCELLED");
}

static void print_bar(const TaskView *view, const Chapter *chapter)
{
    int filled = (int)(view->percentage * BAR_WIDTH / 100);
    char bar[BAR_WIDTH + 1];
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < filled ? '#' : '-';
    bar[BAR_WIDTH] = '\0';
    printf("%-30.30s [%s] %3u%%  ", view->task_id, bar, (unsigned)view->percentage);
    if (!strcmp(view->status, "PROCESSING") && view->segment_id >= 1 &&
        view->segment_id <= chapter->sentence_count) {
        const char *text = chapter->sentences[view->segment_id - 1].text;
        bool cut = strlen(text) > SNIPPET_CHARS;
        printf("sentence %u/%zu: %.*s%s%s", (unsigned)view->segment_id, chapter->sentence_count,
               cut ? SNIPPET_CHARS - 3 : SNIPPET_CHARS, text, cut ? "..." : "",
               view->cancel_requested ? "  (stopping)" : "");
    } else {
        printf("%s", view->status);
    }
}

static double monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + now.tv_nsec / 1e9;
}

static void usage(FILE *out)
{
    fputs("usage: narrate [--out DIR] [--report FILE] [--pace SECONDS] STORY.txt\n"
          "  --out DIR       where the WAV files go (default: out/c)\n"
          "  --report FILE   write the final status JSON of every task there\n"
          "  --pace SECONDS  pause after each sentence (to watch, or to try Ctrl-C)\n",
          out);
}

static double parse_pace(const char *text)
{
    char *end;
    errno = 0;
    double seconds = strtod(text, &end);
    if (errno || end == text || *end || !(seconds >= 0 && seconds <= 3600))
        die(2, "--pace takes seconds between 0 and 3600, got '%s'", text);
    return seconds;
}

int main(int argc, char **argv)
{
    const char *out_dir = "out/c", *report_path = NULL, *story_path = NULL;
    double pace_seconds = 0;
    for (int i = 1; i < argc; i++) {
        bool has_value = i + 1 < argc;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--out") && has_value) {
            out_dir = argv[++i];
        } else if (!strcmp(argv[i], "--report") && has_value) {
            report_path = argv[++i];
        } else if (!strcmp(argv[i], "--pace") && has_value) {
            pace_seconds = parse_pace(argv[++i]);
        } else if (argv[i][0] == '-' || story_path) {
            usage(stderr);
            die(2, "unexpected argument '%s'", argv[i]);
        } else {
            story_path = argv[i];
        }
    }
    if (!story_path) {
        usage(stderr);
        return 2;
    }
    if (!*out_dir)
        die(2, "--out needs a directory");

    Story story = load_story(story_path);
    engine_start(NULL);

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);

    size_t count = story.chapter_count;
    TaskView *views = checked_realloc(NULL, count * sizeof *views);
    memset(views, 0, count * sizeof *views);
    double wall_start = monotonic_seconds();
    printf("Narrating \"%s\" (%zu chapters) with libespeak-ng, storyflow-tasks %s\n",
           story.title ? story.title : story_path, count, sft_version());
    for (size_t i = 0; i < count; i++) {
        ChapterJob *job = checked_realloc(NULL, sizeof *job);
        job->chapter = &story.chapters[i];
        job->pace_seconds = pace_seconds;
        int length = snprintf(job->directory, sizeof job->directory, "%s/%02zu-%s", out_dir,
                              i + 1, story.chapters[i].slug);
        if (length < 0 || (size_t)length >= sizeof job->directory)
            die(2, "the output path %s/%02zu-%s is too long", out_dir, i + 1,
                story.chapters[i].slug);
        snprintf(views[i].task_id, sizeof views[i].task_id, "%02zu-%s", i + 1,
                 story.chapters[i].slug);
        SftResult result = sft_submit_task(narrate_chapter, job, free_job, views[i].task_id, NULL);
        if (result != SFT_OK) {
            char *reason = sft_last_error_message();
            fprintf(stderr, "narrate: cannot submit %s: %s: %s\n", views[i].task_id,
                    sft_result_name(result), reason ? reason : "");
            sft_string_free(reason);
            free(job);
            return 1;
        }
    }

    bool live = isatty(STDOUT_FILENO), drawn = false, cancelled = false;
    char (*shown)[64] = checked_realloc(NULL, count * sizeof *shown);
    memset(shown, 0, count * sizeof *shown);
    for (;;) {
        size_t finished = 0;
        for (size_t i = 0; i < count; i++) {
            char *json = sft_get_task_status(views[i].task_id);
            if (!json || !read_status(json, &views[i]))
                die(1, "no status for task %s", views[i].task_id);
            sft_string_free(json);
            finished += is_final(&views[i]);
        }
        if (g_interrupts && !cancelled) {
            cancelled = true;
            fprintf(stderr, "\nCtrl-C: cancelling the pending chapters, stopping the running one"
                            " (Ctrl-C again to quit at once)\n");
            for (size_t i = 0; i < count; i++) {
                SftResult result = sft_cancel_task(views[i].task_id);
                /* INVALID_STATE: it finished meanwhile, nothing to cancel. */
                if (result != SFT_OK && result != SFT_ERR_INVALID_STATE)
                    fprintf(stderr, "narrate: cancel %s: %s\n", views[i].task_id,
                            sft_result_name(result));
            }
            drawn = false; /* the message broke the live block: draw it afresh */
        }
        if (live) {
            if (drawn)
                printf("\033[%zuA", count);
            for (size_t i = 0; i < count; i++) {
                printf("\r\033[2K");
                print_bar(&views[i], &story.chapters[i]);
                putchar('\n');
            }
            drawn = true;
        } else {
            /* Not a terminal (a log, a test): a line whenever a task moves on, to another
             * sentence too (a task may be seen PROCESSING before it names its first one). */
            for (size_t i = 0; i < count; i++) {
                char state[64];
                snprintf(state, sizeof state, "%s %u %u %d", views[i].status,
                         (unsigned)views[i].current, (unsigned)views[i].segment_id,
                         views[i].cancel_requested);
                if (strcmp(state, shown[i]) != 0) {
                    memcpy(shown[i], state, sizeof state);
                    print_bar(&views[i], &story.chapters[i]);
                    putchar('\n');
                }
            }
        }
        fflush(stdout);
        if (finished == count)
            break;
        sleep_ms(POLL_INTERVAL_MS);
    }
    double wall_seconds = monotonic_seconds() - wall_start;

    printf("\n%-30s %-10s %9s %7s %9s %8s\n", "task", "status", "segments", "errors", "audio s",
           "wall s");
    size_t all_segments = 0, all_sentences = 0, all_errors = 0;
    double all_audio = 0;
    int exit_code = g_interrupts ? 130 : 0;
    for (size_t i = 0; i < count; i++) {
        const TaskView *view = &views[i];
        char segments[32], run[16] = "-";
        snprintf(segments, sizeof segments, "%zu/%zu", view->segments,
                 story.chapters[i].sentence_count);
        if (view->started_at >= 0 && view->completed_at >= 0)
            snprintf(run, sizeof run, "%.2f", view->completed_at - view->started_at);
        printf("%-30.30s %-10s %9s %7zu %9.2f %8s\n", view->task_id, view->status, segments,
               view->errors, view->audio_seconds, run);
        all_segments += view->segments;
        all_sentences += story.chapters[i].sentence_count;
        all_errors += view->errors;
        all_audio += view->audio_seconds;
        if (!strcmp(view->status, "FAILED") && exit_code == 0)
            exit_code = 1;
    }
    char total_segments[32];
    snprintf(total_segments, sizeof total_segments, "%zu/%zu", all_segments, all_sentences);
    printf("%-30s %-10s %9s %7zu %9.2f %8.2f\n", "total", "", total_segments, all_errors,
           all_audio, wall_seconds);
    bool any_unfinished = false;
    for (size_t i = 0; i < count; i++) {
        if (!views[i].error[0])
            continue;
        if (!any_unfinished)
            printf("\nChapters not completed:\n");
        any_unfinished = true;
        printf("  %s: %s\n", views[i].task_id, views[i].error);
    }
    if (all_errors) {
        printf("\nSegment errors (the chapter went on):\n");
        for (size_t i = 0; i < count; i++) {
            char *json = sft_get_task_status(views[i].task_id);
            cJSON *root = cJSON_Parse(json);
            const cJSON *entry;
            cJSON_ArrayForEach(entry, cJSON_GetObjectItemCaseSensitive(root, "errors"))
            {
                const cJSON *id = cJSON_GetObjectItemCaseSensitive(entry, "segment_id");
                const cJSON *text = cJSON_GetObjectItemCaseSensitive(entry, "error");
                printf("  %s sentence %d: %s\n", views[i].task_id,
                       cJSON_IsNumber(id) ? id->valueint : 0,
                       cJSON_IsString(text) ? text->valuestring : "?");
            }
            cJSON_Delete(root);
            sft_string_free(json);
        }
    }
    printf("\nWAV files: %s/<chapter>/<sentence>.wav\n", out_dir);
    printf("Narrated %.1f s of audio in %.2f s of wall time.\n", all_audio, wall_seconds);

    if (report_path) {
        char *tasks = NULL;
        SftResult result = sft_list_tasks(NULL, &tasks);
        FILE *report = result == SFT_OK ? fopen(report_path, "w") : NULL;
        bool written = report && fputs(tasks, report) >= 0;
        if (report && fclose(report) != 0)
            written = false;
        if (!written) {
            fprintf(stderr, "narrate: cannot write the report %s\n", report_path);
            exit_code = exit_code ? exit_code : 1;
        }
        sft_string_free(tasks);
    }
    sft_shutdown(SFT_WAIT_FOREVER);
    espeak_ng_Terminate();
    free(g_samples);
    free(shown);
    free(views);
    free_story(&story);
    return exit_code;
}
