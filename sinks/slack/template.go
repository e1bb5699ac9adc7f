package slack

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"

	"github.com/klaxon-dev/klaxon/correlate"
	"github.com/klaxon-dev/klaxon/sinks"
)

// templates are a sink's message templates (nil: the default part).
type templates struct {
	title, text *template.Template
}

// parseTemplates parses the title and text templates and renders them
// once over a sample incident, so that a template that cannot work (a
// misspelt field, a function misused) is an error at load.
func parseTemplates(title, text string) (*templates, error) {
	t := &templates{}
	extra := template.FuncMap{"escape": escape}
	var err error
	// A label or group key the incident lacks is empty (.Labels.team on
	// an incident of a job without meta); a misspelt field is an error.
	if title != "" {
		if t.title, err = sinks.ParseTemplate("title", title, extra); err != nil {
			return nil, fmt.Errorf("title: %w", err)
		}
		t.title.Option("missingkey=zero")
	}
	if text != "" {
		if t.text, err = sinks.ParseTemplate("text", text, extra); err != nil {
			return nil, fmt.Errorf("text: %w", err)
		}
		t.text.Option("missingkey=zero")
	}
	sample := correlate.Incident{ID: "x", Rule: "r", Status: correlate.StatusFiring, Group: map[string]string{}, Labels: map[string]string{}}
	if _, err := t.render(BuildMessage(sample), sample); err != nil {
		return nil, err
	}
	return t, nil
}

func execute(t *template.Template, in correlate.Incident) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, in); err != nil {
		return "", err
	}
	return b.String(), nil
}

// render puts the templated parts into the default message m of in: the
// title becomes the header and the notification text, the text replaces
// the summary section.
func (t *templates) render(m Message, in correlate.Incident) (Message, error) {
	if t == nil {
		return m, nil
	}
	if t.title != nil {
		s, err := execute(t.title, in)
		if err != nil {
			return m, fmt.Errorf("title: %w", err)
		}
		s = strings.Join(strings.Fields(s), " ")
		if s == "" {
			s = in.Rule
		}
		m.Text = s
		for i := range m.Blocks {
			if m.Blocks[i].Type == "header" {
				m.Blocks[i].Text = &Text{Type: "plain_text", Text: sinks.Truncate(s, maxHeader), Emoji: true}
				break
			}
		}
	}
	if t.text != nil {
		s, err := execute(t.text, in)
		if err != nil {
			return m, fmt.Errorf("text: %w", err)
		}
		section := Block{Type: "section", Text: &Text{Type: "mrkdwn", Text: sinks.Truncate(s, maxSection)}}
		var blocks []Block
		placed := false
		for i, b := range m.Blocks {
			switch {
			case b.Type == "section" && b.Text != nil && !placed: // the summary
				if strings.TrimSpace(s) != "" {
					blocks = append(blocks, section)
				}
				placed = true
			case b.Type == "section" && b.Fields != nil && !placed: // no summary: before the fields
				if strings.TrimSpace(s) != "" {
					blocks = append(blocks, section)
				}
				placed = true
				blocks = append(blocks, m.Blocks[i])
			default:
				blocks = append(blocks, b)
			}
		}
		m.Blocks = blocks
	}
	return m, nil
}
