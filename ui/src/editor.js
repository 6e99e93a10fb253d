// The SQL editor: CodeMirror 6 with the PostgreSQL dialect, completion from
// the schema, Ctrl/Cmd+Enter to run, and a mark at the error position.

import { EditorState, Compartment, Prec, StateField, StateEffect, RangeSet } from "@codemirror/state";
import {
  EditorView,
  keymap,
  lineNumbers,
  highlightActiveLine,
  highlightActiveLineGutter,
  drawSelection,
  placeholder,
  Decoration,
  gutter,
  GutterMarker,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { bracketMatching, indentOnInput, syntaxHighlighting, HighlightStyle } from "@codemirror/language";
import { autocompletion, completionKeymap, closeBrackets, closeBracketsKeymap } from "@codemirror/autocomplete";
import { sql, PostgreSQL } from "@codemirror/lang-sql";
import { tags as t } from "@lezer/highlight";

// Colours come from CSS variables, so one style serves both themes.
const highlight = HighlightStyle.define([
  { tag: [t.keyword, t.operatorKeyword, t.modifier], color: "var(--hl-keyword)", fontWeight: "600" },
  { tag: t.string, color: "var(--hl-string)" },
  { tag: [t.number, t.bool, t.null], color: "var(--hl-number)" },
  { tag: [t.comment, t.lineComment, t.blockComment], color: "var(--hl-comment)", fontStyle: "italic" },
  { tag: [t.typeName, t.standard(t.name)], color: "var(--hl-type)" },
  // lang-sql tags "quoted identifiers" as special(string).
  { tag: [t.special(t.name), t.special(t.string)], color: "var(--hl-type)" },
  { tag: [t.operator, t.punctuation, t.paren, t.brace, t.squareBracket], color: "var(--hl-punct)" },
]);

const theme = EditorView.theme({
  "&": { height: "100%", fontSize: "13.5px", backgroundColor: "var(--editor-bg)", color: "var(--fg)" },
  ".cm-content": { fontFamily: "var(--mono)", caretColor: "var(--fg)", padding: "6px 0" },
  ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.5" },
  ".cm-gutters": { backgroundColor: "var(--editor-gutter)", color: "var(--muted)", border: "none" },
  ".cm-activeLine": { backgroundColor: "var(--editor-active)" },
  ".cm-activeLineGutter": { backgroundColor: "var(--editor-active)" },
  "&.cm-focused .cm-cursor": { borderLeftColor: "var(--fg)" },
  "&.cm-focused .cm-selectionBackground, .cm-selectionBackground, ::selection": {
    backgroundColor: "var(--selection) !important",
  },
  ".cm-tooltip": { backgroundColor: "var(--panel)", color: "var(--fg)", border: "1px solid var(--border)" },
  ".cm-tooltip-autocomplete ul li[aria-selected]": { backgroundColor: "var(--accent)", color: "#fff" },
  ".cm-completionDetail": { color: "var(--muted)", marginLeft: "1em", fontStyle: "normal" },
  ".cm-sql-error": { textDecoration: "underline wavy var(--danger)", backgroundColor: "var(--danger-bg)" },
  ".cm-sql-error-line": { backgroundColor: "var(--danger-bg)" },
  ".cm-error-gutter": { width: "10px" },
  ".cm-error-dot": { color: "var(--danger)", fontSize: "10px", cursor: "default" },
});

// The error mark: set by markError, cleared by any edit.
const setError = StateEffect.define();
class ErrorDot extends GutterMarker {
  constructor(message) {
    super();
    this.message = message;
  }
  toDOM() {
    const s = document.createElement("span");
    s.className = "cm-error-dot";
    s.textContent = "●";
    s.title = this.message;
    return s;
  }
}
const errorField = StateField.define({
  create: () => ({ deco: Decoration.none, dots: RangeSet.empty }),
  update(value, tr) {
    for (const e of tr.effects) {
      if (e.is(setError)) {
        if (!e.value) return { deco: Decoration.none, dots: RangeSet.empty };
        const { from, to, lineFrom, message } = e.value;
        const deco = Decoration.set(
          [
            Decoration.line({ class: "cm-sql-error-line" }).range(lineFrom),
            ...(to > from ? [Decoration.mark({ class: "cm-sql-error", attributes: { title: message } }).range(from, to)] : []),
          ],
          true,
        );
        return { deco, dots: RangeSet.of([new ErrorDot(message).range(lineFrom)]) };
      }
    }
    if (tr.docChanged) return { deco: Decoration.none, dots: RangeSet.empty };
    return value;
  },
  provide: (f) => [
    EditorView.decorations.from(f, (v) => v.deco),
    gutter({ class: "cm-error-gutter", markers: (view) => view.state.field(f).dots }),
  ],
});

/**
 * Where to mark an error at 1-based `line`/`column` of a text sent from
 * offset `base` of `doc` (a CodeMirror Text): {from, to, lineFrom}, the word
 * at the position or one character. `base` is clamped to the document, which
 * may have shrunk since; null when the line lies past its end.
 */
export function errorRange(doc, line, column, base = 0) {
  base = Math.min(Math.max(0, base | 0), doc.length);
  const baseLine = doc.lineAt(base);
  const lineNo = Math.max(1, baseLine.number + line - 1);
  if (lineNo > doc.lines) return null;
  const l = doc.line(lineNo);
  const col0 = line === 1 ? base - baseLine.from + column - 1 : column - 1;
  const from = Math.min(l.to, l.from + Math.max(0, col0));
  let to = from;
  while (to < l.to && /[\w"'.$]/.test(l.text[to - l.from])) to++;
  if (to === from && from < l.to) to = from + 1;
  return { from, to, lineFrom: l.from };
}

/**
 * Creates the editor in `parent`. `onRun()` is called on Ctrl/Cmd+Enter.
 * Returns an object with the view and helpers.
 */
export function createEditor(parent, { doc = "", onRun }) {
  const language = new Compartment();
  const runKeys = Prec.highest(
    keymap.of([
      { key: "Mod-Enter", run: () => (onRun(), true) },
      { key: "Ctrl-Enter", run: () => (onRun(), true) },
    ]),
  );
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc,
      extensions: [
        runKeys,
        lineNumbers(),
        highlightActiveLineGutter(),
        history(),
        drawSelection(),
        indentOnInput(),
        bracketMatching(),
        closeBrackets(),
        autocompletion({ activateOnTyping: true }),
        highlightActiveLine(),
        placeholder("SELECT … — Ctrl+Enter runs"),
        syntaxHighlighting(highlight),
        language.of(sql({ dialect: PostgreSQL, upperCaseKeywords: true })),
        errorField,
        keymap.of([...closeBracketsKeymap, ...defaultKeymap, ...historyKeymap, ...completionKeymap, indentWithTab]),
        EditorView.lineWrapping,
        theme,
      ],
    }),
  });

  return {
    view,
    getText: () => view.state.doc.toString(),
    /** The selected text and where it starts, or null when nothing is selected. */
    getSelection() {
      const r = view.state.selection.main;
      if (r.empty) return null;
      return { text: view.state.sliceDoc(r.from, r.to), from: r.from };
    },
    setText(text) {
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: text },
        selection: { anchor: text.length },
        effects: setError.of(null),
      });
    },
    /** Inserts at the cursor, with a space before when it would run into a word. */
    insertAtCursor(text) {
      const r = view.state.selection.main;
      const before = view.state.sliceDoc(Math.max(0, r.from - 1), r.from);
      if (before && /[\w"')]/.test(before)) text = " " + text;
      view.dispatch({
        changes: { from: r.from, to: r.to, insert: text },
        selection: { anchor: r.from + text.length },
        scrollIntoView: true,
      });
      view.focus();
    },
    /** Schema completion: `namespace` as lang-sql's SQLNamespace, `defaultSchema` = current database. */
    setSchema(namespace, defaultSchema) {
      view.dispatch({
        effects: language.reconfigure(
          sql({ dialect: PostgreSQL, upperCaseKeywords: true, schema: namespace, defaultSchema: defaultSchema || undefined }),
        ),
      });
    },
    /**
     * Marks the error at 1-based line/column of the text that was sent,
     * which started at document offset `base`.
     */
    markError(line, column, message, base = 0) {
      const r = errorRange(view.state.doc, line, column, base);
      if (!r) return; // the text changed since it was sent
      view.dispatch({ effects: [setError.of({ ...r, message }), EditorView.scrollIntoView(r.from, { y: "nearest" })] });
    },
    clearError() {
      view.dispatch({ effects: setError.of(null) });
    },
    focus: () => view.focus(),
  };
}
